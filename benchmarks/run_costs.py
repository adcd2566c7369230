"""What BlockCert costs relative to the plain model, measured in one run on the default model.

    .venv/bin/python benchmarks/run_costs.py [--repeats 7] [--blocks 0,15,29] [--batch-size 8] [--check]

Three ratios, each on the built-in stress prompts batched exactly as ``blockcert run`` batches them
(``--batch-size`` prompts per batch, right-padded with ``blockcert.trace.pad_batch``):

1. ``blockcert.trace.capture(loaded, prompts)`` ÷ a plain HF forward (``loaded.model(ids, use_cache=False)``
   under ``torch.no_grad``) over the same padded batches.                                   target <= 1.1
2. per block, ``get_plugins().replay(ir, x, positions)`` (the torch float32 IR replay) ÷
   ``loaded.native.call_block(index, x, positions)``, both on the recorded padded batch inputs
   x^(index) of every batch.                                                                target <= 1.3
3. ``blockcert.run.run(loaded=loaded, blocks="all", force=True)`` on every block ÷ one plain
   forward-with-loss (HF forward + ``token_nll`` on the logits) over the same batches.      target <= 22

Both sides of a ratio are timed alternately in the same process (A B, B A, A B, ...) so that they see
the same machine load; every figure is a median over ``--repeats`` pairs, and the ratio is the ratio
of the two medians. Sides 1 and 2 are short, so one sample runs them ``--inner`` times back to back.
torch keeps its default thread count. ``--check`` exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

import blockcert
from blockcert.pipeline import run as blockcert_run
from blockcert.prompts import builtin
from blockcert.trace import batches, capture, pad_batch, token_nll, tokenize_prompts

TARGET_CAPTURE = 1.1
TARGET_REPLAY = 1.3
TARGET_RUN = 22.0


def paired_medians(a: Callable[[], object], b: Callable[[], object], repeats: int, inner: int = 1) -> tuple[float, float]:
    """Median seconds of one call of ``a`` and of ``b``, sampled alternately (ABBA...) after one warm-up each."""
    a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for r in range(repeats):
        order = ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta))
        for fn, out in order:
            gc.collect()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - start) / inner)
    return statistics.median(ta), statistics.median(tb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs per ratio (default 7)")
    parser.add_argument("--inner", type=int, default=5, help="calls per sample for ratios 1 and 2 (default 5)")
    parser.add_argument("--blocks", default="0,15,29", help="blocks for ratio 2 (default 0,15,29)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch, as `blockcert run` (default 8)")
    parser.add_argument("--prompts", default="stress", help="built-in prompt set (default stress)")
    parser.add_argument("--skip-run", action="store_true", help="skip ratio 3 (the whole `blockcert run`)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio misses its target")
    args = parser.parse_args()
    if args.repeats < 1 or args.inner < 1:
        parser.error("--repeats and --inner must be >= 1")

    loaded = blockcert.load_model()
    native = loaded.native
    plugins = blockcert.get_plugins()
    texts = builtin(args.prompts)
    ids = tokenize_prompts(loaded, texts)
    groups = batches(len(ids), args.batch_size)
    padded = [pad_batch([ids[k] for k in g]) for g in groups]  # [B, T_max] per batch, as capture pads
    positions = [torch.arange(p.shape[1])[None].expand(p.shape) for p in padded]
    n_ctx = max(a.size for a in ids)
    tokens = sum(a.size for a in ids)

    print(f"model {loaded.name} ({native.n_blocks} blocks, d={native.d_model}, {loaded.dtype}), "
          f"{len(texts)} builtin:{args.prompts} prompts, {tokens} tokens, batches {[tuple(p.shape) for p in padded]}")
    print(f"{date.today().isoformat()}  torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}, {platform.machine()}; repeats {args.repeats}, inner {args.inner}")
    print()

    @torch.no_grad()
    def plain_forward() -> None:
        for p in padded:
            loaded.model(p, use_cache=False)

    @torch.no_grad()
    def forward_with_loss() -> None:
        for p in padded:
            token_nll(loaded.model(p, use_cache=False).logits, p)

    rows: list[tuple[str, float, float, float, float]] = []  # name, t_blockcert, t_native, ratio, target

    # 1. capture ÷ plain forward
    t_cap, t_fwd = paired_medians(lambda: capture(loaded, texts, batch_size=args.batch_size), plain_forward,
                                  args.repeats, args.inner)
    rows.append(("1 capture / plain forward", t_cap, t_fwd, t_cap / t_fwd, TARGET_CAPTURE))

    # 2. IR replay ÷ native block, on the recorded padded batch inputs
    with torch.no_grad():
        streams = [native.residual_stream(p, pos) for p, pos in zip(padded, positions)]  # per batch: x^(0..L)
    for index in (int(b) for b in args.blocks.split(",")):
        ir = plugins.to_ir(native, index, n_ctx)
        xs = [s[index] for s in streams]

        @torch.no_grad()
        def native_block(index: int = index, xs: list[torch.Tensor] = xs) -> None:
            for x, pos in zip(xs, positions):
                native.call_block(index, x, pos)

        @torch.no_grad()
        def ir_replay(ir: blockcert.BlockIR = ir, xs: list[torch.Tensor] = xs) -> None:
            for x, pos in zip(xs, positions):
                plugins.replay(ir, x, pos)

        t_ir, t_nat = paired_medians(ir_replay, native_block, args.repeats, args.inner)
        rows.append((f"2 IR replay / native block {index}", t_ir, t_nat, t_ir / t_nat, TARGET_REPLAY))

    # 3. the whole run on every block ÷ one forward-with-loss
    if not args.skip_run:
        with tempfile.TemporaryDirectory(prefix="blockcert-bench-") as tmp:
            out = Path(tmp) / "run"

            def whole_run() -> None:
                blockcert_run(loaded=loaded, prompts=f"builtin:{args.prompts}", blocks="all", out=out, force=True,
                              batch_size=args.batch_size)

            t_run, t_fl = paired_medians(whole_run, forward_with_loss, args.repeats)
        rows.append((f"3 run (all {native.n_blocks} blocks) / forward+loss", t_run, t_fl, t_run / t_fl, TARGET_RUN))

    missed = [r for r in rows if r[3] > r[4]]
    width = max(len(r[0]) for r in rows)
    print(f"{'ratio':<{width}} {'blockcert ms':>13} {'native ms':>10} {'ratio':>7} {'target':>8}  status")
    for name, t_bc, t_nat, ratio, target in rows:
        status = "ok" if ratio <= target else "MISSED"
        print(f"{name:<{width}} {t_bc * 1e3:>13.1f} {t_nat * 1e3:>10.2f} {ratio:>7.2f} {'<= ' + format(target, 'g'):>8}  {status}")
    print()
    print(f"{len(rows) - len(missed)}/{len(rows)} targets met" + (f"; missed: {', '.join(r[0] for r in missed)}" if missed else ""))
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
