"""What `blockcert minimize` costs against certifying the same block, measured in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/minimize_costs.py [--block 15] [--budget all] [--dtype float32]

Loads the model once (excluded from both timings), then times, back to back on the same loaded model:

* certify: ``blockcert.run`` of the block's plain extraction (trace capture, IR, replay, loss coverage,
  certificate), the cost a user pays for one block today;
* minimize: ``blockcert.minimize.minimize`` of the block (trace capture, scores, the search, and the final
  certifying run of the result).

It prints both wall times, the number of candidates the search measured, how many were rejected on cov_act before
their loss suffix ran, and the ratio minimize ÷ certify. Issue #22's target is a ratio of at most 30 on a SmolLM2
block. One run each: run it on a quiet machine (other jobs on the cores inflate both sides unevenly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

TARGET = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: the default model (SmolLM2-135M-Instruct)")
    parser.add_argument("--block", type=int, default=15)
    parser.add_argument("--budget", default="all")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", default="builtin:stress")
    args = parser.parse_args()
    import torch

    import blockcert
    from blockcert.minimize import minimize

    loaded = blockcert.load_model(args.model, dtype=args.dtype)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"{loaded.name} ({args.dtype}), block {args.block}, budget {args.budget}, prompts {args.prompts}")
    with tempfile.TemporaryDirectory(prefix="blockcert-minimize-") as tmp:
        start = time.perf_counter()
        certified = blockcert.run(loaded=loaded, blocks=[args.block], prompts=args.prompts, out=Path(tmp) / "certify")
        certify_s = time.perf_counter() - start
        start = time.perf_counter()
        result = minimize(loaded=loaded, blocks=[args.block], budget=args.budget, prompts=args.prompts, out=Path(tmp) / "minimize")
        minimize_s = time.perf_counter() - start
        log = json.loads((Path(tmp) / "minimize" / result.blocks[0]["search_log"]).read_text())
    (b,) = result.blocks
    rejected = sum(e["rejected_before_loss"] for e in log["candidates"])
    kept, totals = b["kept"], b["totals"]
    print(f"certify the block:   {certify_s:8.1f} s  (certified: {certified.blocks[0].certified})")
    print(f"minimize the block:  {minimize_s:8.1f} s  ({b['candidates']} candidates, {rejected} rejected on cov_act before the loss suffix; "
          f"search {b['search_seconds']:.1f} s)")
    print(f"kept: heads {kept['heads']}/{totals['heads']}, neurons {kept['neurons']}/{totals['neurons']}, rank "
          f"{sum(kept['rank'].values())}/{sum(totals['rank'].values())}; certified: {b['certified']}")
    ratio = minimize_s / certify_s
    print(f"ratio minimize / certify: {ratio:.1f}  (target <= {TARGET:g}: {'met' if ratio <= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
