"""Every plugin hook is *called* by the test suite, not merely named in it (a mention in a comment used to
be enough). tests/conftest.py records each blockcert_* hook the tests call through pluggy in this process;
this module is named to run last, and checks the record once the whole suite has run before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CALLED_HOOKS
from test_docs import HOOKS

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_was_called_by_a_test(hook: str, request: pytest.FixtureRequest) -> None:
    ran = {Path(str(item.path)).name for item in request.session.items}
    every = {p.name for p in TESTS.glob("test_*.py")}
    if ran != every:
        pytest.skip("only meaningful when the whole suite runs in this process (some test modules were not collected)")
    assert hook in CALLED_HOOKS, f"no test called {hook} through the plugin manager: write a test that exercises it"
