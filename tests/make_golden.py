"""Regenerate the golden run under tests/data/golden-run-v<N>/ (only when the certificate schema changes).

    .venv/bin/python tests/make_golden.py

A small seeded random Llama with the synthetic byte tokenizer, two blocks, the default prompts, Lipschitz bounds
and (from v3) the noise-floor policy, so the floors are part of the golden artifacts. Every later
version of BlockCert must still verify the committed golden runs (tests/test_golden.py); when the format
changes, add a migration in blockcert/verifier/subjects.py and a new golden directory instead of rewriting an old one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from test_run import make_model_dir
    from transformers import AutoTokenizer

    import blockcert
    from blockcert.certificate import CERT_SCHEMA_VERSION
    from blockcert.model.synthetic import write_tokenizer
    from blockcert.policy import Policy

    target = HERE / "data" / f"golden-run-v{CERT_SCHEMA_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp) / "tokenizer")
        model = make_model_dir(Path(tmp) / "model", AutoTokenizer.from_pretrained(Path(tmp) / "tokenizer"), layers=2)
        if target.exists():
            shutil.rmtree(target)
        # v2: certificates log Lipschitz bounds; v3: the policy is named, and noise-floor stores its floors
        blockcert.run(model, prompts="builtin:default", out=target, bounds=True, policy=Policy(name="noise-floor"))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
