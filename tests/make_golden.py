"""Regenerate the golden run under tests/data/golden-run-v<N>/ (only when the certificate schema changes).

    .venv/bin/python tests/make_golden.py

A small seeded random Llama with the real SmolLM2 tokenizer, two blocks, the default prompts. Every later
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
    import blockcert
    from blockcert.certificate import CERT_SCHEMA_VERSION
    from test_run import make_model_dir

    target = HERE / "data" / f"golden-run-v{CERT_SCHEMA_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model_dir(Path(tmp) / "model", blockcert.load_model().tokenizer, layers=2)
        if target.exists():
            shutil.rmtree(target)
        blockcert.run(model, prompts="builtin:default", out=target, bounds=True)  # v2: certificates log Lipschitz bounds
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
