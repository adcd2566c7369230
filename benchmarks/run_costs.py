"""What BlockCert costs relative to the plain model, measured in one run on the default model.

    .venv/bin/python benchmarks/run_costs.py [--repeats 7] [--run-repeats 3] [--inner 5] [--blocks 0,15,29] [--check]

Three ratios, each on the built-in stress prompts batched exactly as ``blockcert run`` batches them
(``--batch-size`` prompts per batch, right-padded with ``blockcert.pipeline.trace.pad_batch``):

1. ``blockcert.pipeline.trace.capture(loaded, prompts)`` ÷ a plain HF forward (``loaded.model(ids, use_cache=False)``
   under ``torch.no_grad``) over the same padded batches.                                   target <= 1.1
2. per block, ``get_plugins().replay(ir, x, positions)`` (the torch float32 IR replay) ÷
   ``loaded.native.call_block(index, x, positions)``, both on the recorded padded batch inputs
   x^(index) of every batch.                                                                target <= 1.3
3. ``blockcert.run(loaded=loaded, blocks="all", force=True)`` (``blockcert.pipeline.certify.run``) on every
   block ÷ one plain forward-with-loss (HF forward + ``token_nll`` on the logits) over the same
   batches.                                                                                 target <= 22

Both sides of a ratio are timed alternately in the same process (A B, B A, A B, ...) so that both see
the same machine load; times are medians of the samples and a ratio is the median over pairs of
(blockcert sample / native sample). Ratio 2's samples run each side ``--inner`` times back to back.
A whole run takes tens of seconds, longer than the load on a shared machine stays put, so ratio 3's
baseline is sampled *inside* each run: once per block, just before the run extracts that block's IR
(``to_ir`` is wrapped for the duration), and those seconds are subtracted from the run's wall time;
the run's pair is (its time, the median of its baseline samples). torch keeps its default thread
count. ``--check`` exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import attrs
import torch

import blockcert
from blockcert.pipeline.certify import run as blockcert_run
from blockcert.prompts import builtin
from blockcert.pipeline.trace import batches, capture, pad_batch, token_nll, tokenize_prompts

TARGET_CAPTURE = 1.1
TARGET_REPLAY = 1.3
TARGET_RUN = 22.0


@attrs.frozen
class Ratio:
    """One ratio: the blockcert side's and the native side's samples (seconds), paired in time."""

    name: str
    blockcert: list[float]
    native: list[float]
    target: float

    @property
    def value(self) -> float:
        """Median over pairs of blockcert_i / native_i (each pair saw the same load)."""
        return statistics.median(a / b for a, b in zip(self.blockcert, self.native))

    @property
    def met(self) -> bool:
        return self.value <= self.target


def paired_samples(a: Callable[[], object], b: Callable[[], object], repeats: int, inner: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per call of ``a`` and of ``b``, sampled alternately (AB BA AB ...) after one warm-up each."""
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
    return ta, tb


def interleaved_run(loaded: Any, plugins: Any, args: argparse.Namespace, baseline: Callable[[], object]) -> tuple[list[float], list[float]]:
    """Seconds of whole ``blockcert run`` calls (all blocks) and of ``baseline``, sampled inside each run.

    The baseline runs once per block, when the run asks for that block's IR (``to_ir`` is wrapped), and
    its time is subtracted from the run's wall time. Returns the runs' times and, per run, the median of
    the baseline samples taken during it.
    """
    samples: list[float] = []
    to_ir = plugins.to_ir

    def to_ir_then_baseline(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        baseline()
        samples.append(time.perf_counter() - start)
        return to_ir(*a, **k)

    runs: list[float] = []
    per_run_baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="blockcert-bench-") as tmp:
        kwargs = dict(loaded=loaded, prompts=f"builtin:{args.prompts}", blocks="all", out=Path(tmp) / "run",
                      force=True, batch_size=args.batch_size)
        loaded.weights_sha256()  # computed once per LoadedModel (cached), so not part of any timed run
        blockcert_run(**{**kwargs, "blocks": "0"})  # warm-up: first-use imports and allocations
        plugins.to_ir = to_ir_then_baseline  # an instance attribute shadowing the method; deleted below
        try:
            for _ in range(args.run_repeats):
                gc.collect()
                samples.clear()
                start = time.perf_counter()
                blockcert_run(**kwargs)
                runs.append(time.perf_counter() - start - sum(samples))
                per_run_baseline.append(statistics.median(samples))
        finally:
            del plugins.to_ir
    return runs, per_run_baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs per ratio (default 7)")
    parser.add_argument("--run-repeats", type=int, default=3, help="whole runs for ratio 3 (default 3)")
    parser.add_argument("--inner", type=int, default=5, help="calls per sample for ratio 2 (default 5)")
    parser.add_argument("--blocks", default="0,15,29", help="blocks for ratio 2 (default 0,15,29)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch, as `blockcert run` (default 8)")
    parser.add_argument("--prompts", default="stress", help="built-in prompt set (default stress)")
    parser.add_argument("--skip-run", action="store_true", help="skip ratio 3 (the whole `blockcert run`)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own default; 1 only to diagnose a busy machine)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio misses its target")
    args = parser.parse_args()
    if min(args.repeats, args.inner, args.run_repeats) < 1:
        parser.error("--repeats, --run-repeats and --inner must be >= 1")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loaded = blockcert.load_model()
    load_before = os.getloadavg()[0]
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
          f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"repeats {args.repeats} (ratio 1), {args.repeats} x inner {args.inner} (ratio 2), run repeats {args.run_repeats} (ratio 3)")
    print()

    @torch.no_grad()
    def plain_forward() -> None:
        for p in padded:
            loaded.model(p, use_cache=False)

    @torch.no_grad()
    def forward_with_loss() -> None:
        for p in padded:
            token_nll(loaded.model(p, use_cache=False).logits, p)

    rows: list[Ratio] = []

    # 1. capture ÷ plain forward
    cap, fwd = paired_samples(lambda: capture(loaded, texts, batch_size=args.batch_size), plain_forward, args.repeats)
    rows.append(Ratio("1 capture / plain forward", cap, fwd, TARGET_CAPTURE))

    # 2. IR replay ÷ native block, on the recorded padded batch inputs x^(index)
    with torch.no_grad():
        streams = [native.residual_stream(p, pos) for p, pos in zip(padded, positions)]  # per batch: x^(0..L)
    for index in (int(b) for b in args.blocks.split(",")):
        ir = plugins.to_ir(native, index, n_ctx)  # n_ctx as `blockcert run` extracts it
        xs = [s[index] for s in streams]

        @torch.no_grad()
        def native_block(index: int = index, xs: list[torch.Tensor] = xs) -> None:
            for x, pos in zip(xs, positions):
                native.call_block(index, x, pos)

        @torch.no_grad()
        def ir_replay(ir: blockcert.BlockIR = ir, xs: list[torch.Tensor] = xs) -> None:
            for x, pos in zip(xs, positions):
                plugins.replay(ir, x, pos)

        rep, nat = paired_samples(ir_replay, native_block, args.repeats, args.inner)
        rows.append(Ratio(f"2 IR replay / native block {index}", rep, nat, TARGET_REPLAY))

    # 3. the whole run on every block ÷ one forward-with-loss, the baseline sampled inside each run
    if not args.skip_run:
        runs, fls = interleaved_run(loaded, plugins, args, forward_with_loss)
        rows.append(Ratio(f"3 run (all {native.n_blocks} blocks) / forward+loss", runs, fls, TARGET_RUN))

    width = max(len(r.name) for r in rows)
    print(f"{'ratio':<{width}} {'blockcert ms':>13} {'native ms':>10} {'ratio':>7} {'target':>8}  status")
    for r in rows:
        print(f"{r.name:<{width}} {statistics.median(r.blockcert) * 1e3:>13.1f} {statistics.median(r.native) * 1e3:>10.2f} "
              f"{r.value:>7.2f} {'<= ' + format(r.target, 'g'):>8}  {'ok' if r.met else 'MISSED'}")
    missed = [r.name for r in rows if not r.met]
    print()
    print("times: medians of the samples; ratio: median over time-paired samples of blockcert / native")
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    if max(load_before, load_after) > (os.cpu_count() or 1) + 0.5:
        print("warning: other processes competed for the CPUs; rerun on a quiet machine before trusting the ratios")
    print(f"{len(rows) - len(missed)}/{len(rows)} targets met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
