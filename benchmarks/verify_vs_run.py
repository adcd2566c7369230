"""Verify time ÷ run time for the same output, measured in one run on the default model.

    .venv/bin/python benchmarks/verify_vs_run.py [--blocks all] [--prompts builtin:stress]

Runs `blockcert.run` once (model already loaded, so model loading is not counted on either side), then
`blockcert.verifier.core` on its output at --level hashes and --level replay (torch and numpy references).
Target: replay-level verify ≤ 0.5 × run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import blockcert
from blockcert.verifier.core import verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default="all")
    parser.add_argument("--prompts", default="builtin:stress")
    args = parser.parse_args()
    loaded = blockcert.load_model()
    loaded.weights_sha256()  # computed once; part of loading, not of the run
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        start = time.perf_counter()
        blockcert.run(loaded=loaded, prompts=args.prompts, blocks=args.blocks, out=out)
        t_run = time.perf_counter() - start
        rows = []
        for level, reference in (("hashes", "torch"), ("replay", "torch"), ("replay", "numpy")):
            start = time.perf_counter()
            report = verify(out, level=level, reference=reference)
            elapsed = time.perf_counter() - start
            assert report.ok, f"verify failed at {level}/{reference}"
            rows.append((level, reference, elapsed))
    print(f"run ({args.blocks} blocks, {args.prompts}): {t_run:.2f} s")
    print(f"{'level':>8} {'reference':>9} {'verify s':>9} {'÷ run':>7} {'target':>7}")
    for level, reference, elapsed in rows:
        target = "≤ 0.5" if level == "replay" else ""
        print(f"{level:>8} {reference:>9} {elapsed:>9.2f} {elapsed / t_run:>7.3f} {target:>7}")


if __name__ == "__main__":
    main()
