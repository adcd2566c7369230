"""Shared test setup: hypothesis profiles (HYPOTHESIS_PROFILE=ci|fast|dev), the printed hypothesis seed,
the record of which plugin hooks the tests really call, and model fixtures."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, core, settings

# ci: random examples every run (not derandomized), reproducible from the seed printed in the header
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("fast", max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SEED = int(os.environ.get("HYPOTHESIS_SEED") or random.SystemRandom().randrange(2**32))
core.global_force_seed = SEED  # what `pytest --hypothesis-seed` does: every property test draws from this seed

#: blockcert_* hooks called in this test process (tests/test_zz_hooks_called.py checks that each was)
CALLED_HOOKS: set[str] = set()


def _record_hook_calls() -> None:
    from pluggy._hooks import HookCaller

    if getattr(HookCaller.__call__, "_blockcert_recording", False):
        return
    original = HookCaller.__call__

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.name.startswith("blockcert_"):
            CALLED_HOOKS.add(self.name)
        return original(self, *args, **kwargs)

    recording._blockcert_recording = True  # type: ignore[attr-defined]
    HookCaller.__call__ = recording  # type: ignore[method-assign]


_record_hook_calls()


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile {os.environ.get('HYPOTHESIS_PROFILE', 'ci')!r}, seed {SEED} (rerun with HYPOTHESIS_SEED={SEED})"


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (SmolLM2-135M-Instruct weights), loaded once per test session."""
    import blockcert

    return blockcert.load_model()


@pytest.fixture(scope="session")
def byte_tokenizer(tmp_path_factory):
    """The synthetic byte-level tokenizer (token id = UTF-8 byte; ``<s>`` 256, ``</s>`` 257, ``<unk>`` 258):
    what the small random-init test models use, so that only tests about the real model load SmolLM2."""
    from transformers import AutoTokenizer

    from blockcert.model.synthetic import write_tokenizer

    path = tmp_path_factory.mktemp("byte-tokenizer")
    write_tokenizer(path)
    return AutoTokenizer.from_pretrained(path)
