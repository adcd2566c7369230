"""What BlockCert costs on a CUDA GPU, measured in one run (``--device cuda``).

    .venv/bin/python benchmarks/gpu_costs.py [--dtype bfloat16] [--repeats 5] [--cache ~/.cache/blockcert/synth] [--ckpt DIR]

Without CUDA it refuses with one line (exit 2): no number in docs/performance.md is a GPU number unless
this script printed it on a GPU. Three measurements, every one timed with ``torch.cuda.synchronize()`` at
both ends, both sides of a ratio alternated (A B, B A, ...) and medians over pairs:

1. run ÷ forward: ``blockcert.run(loaded=..., blocks="all", device="cuda")`` on the default model (SmolLM2-135M)
   ÷ one plain forward-with-loss over the same padded batches of the built-in stress prompts.
2. replay ÷ native: per block, the IR replay (``get_plugins().replay``) on the device ÷ the HF block
   (``native.call_block``) on the same recorded inputs; the median over blocks is printed, and each block's.
3. the TinyLlama-shaped run the paper times (118 s on an H100): a synthetic TinyLlama-1.1B checkpoint
   (``blockcert synth --shape tinyllama``, cached under ``--cache``, or ``--ckpt``), blocks 0,5,10,15,20,
   its 10 prompts × 256 tokens, wall seconds of ``blockcert.run`` (model load excluded).
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
from pathlib import Path
from typing import Any


def cuda_seconds(fn: Callable[[], object]) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def paired(a: Callable[[], object], b: Callable[[], object], repeats: int) -> float:
    """Median over pairs of seconds(a) / seconds(b), sampled alternately after one warm-up each."""
    a(), b()
    ratios = []
    for r in range(repeats):
        gc.collect()
        if r % 2 == 0:
            ta, tb = cuda_seconds(a), cuda_seconds(b)
        else:
            tb, ta = cuda_seconds(b), cuda_seconds(a)
        ratios.append(ta / tb)
    return statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/blockcert/synth")
    parser.add_argument("--ckpt", type=Path, default=None, help="a TinyLlama-shaped checkpoint directory (default: synthesized)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu_costs.py needs a CUDA GPU (torch.cuda.is_available() is False here); nothing measured", file=sys.stderr)
        return 2
    import blockcert
    from blockcert.pipeline.trace import batches, capture, pad_batch, token_nll, tokenize_prompts
    from blockcert.plugins import get_plugins
    from blockcert.prompts import builtin

    print(f"# {torch.cuda.get_device_name()} · torch {torch.__version__} · {platform.python_version()} · dtype {args.dtype}")
    loaded = blockcert.load_model(dtype=args.dtype, device="cuda")
    texts = builtin("stress")
    ids = tokenize_prompts(loaded, texts)
    padded = [pad_batch([ids[k] for k in g]).to("cuda") for g in batches(len(ids), args.batch_size)]

    @torch.no_grad()
    def forward() -> None:
        for b in padded:
            token_nll(loaded.model(b, use_cache=False).logits, b)

    with tempfile.TemporaryDirectory(prefix="blockcert-gpu-") as tmp:
        def certify() -> None:
            blockcert.run(loaded=loaded, prompts="builtin:stress", blocks="all", out=Path(tmp) / "run", force=True,
                          batch_size=args.batch_size, device="cuda")

        loaded.weights_sha256()
        print(f"run ÷ forward (all {loaded.native.n_blocks} blocks): {paired(certify, forward, args.repeats):.1f}")

    traces = capture(loaded, texts, batch_size=args.batch_size)
    plugins = get_plugins()
    per_block = []
    for index in range(loaded.native.n_blocks):
        ir = plugins.to_ir(loaded.native, index, max(t.n_tokens for t in traces))
        xs = [torch.from_numpy(t.residual[index])[None].to("cuda") for t in traces]
        pos = [torch.arange(x.shape[1], device="cuda")[None] for x in xs]

        @torch.no_grad()
        def replay(xs: Any = xs, pos: Any = pos, ir: Any = ir) -> None:
            for x, p in zip(xs, pos):
                plugins.replay(ir, x, p)

        @torch.no_grad()
        def native(xs: Any = xs, pos: Any = pos, index: int = index) -> None:
            for x, p in zip(xs, pos):
                loaded.native.call_block(index, x.to(loaded.native.dtype), p)

        per_block.append(paired(replay, native, args.repeats))
    print(f"replay ÷ native: median {statistics.median(per_block):.2f} over {len(per_block)} blocks "
          f"(min {min(per_block):.2f}, max {max(per_block):.2f})")

    from blockcert.model.synthetic import cached_checkpoint

    ckpt = args.ckpt or cached_checkpoint(args.cache, "tinyllama", args.dtype, announce=lambda m: print(m, flush=True))
    big = blockcert.load_model(str(ckpt), dtype=args.dtype, device="cuda")
    with tempfile.TemporaryDirectory(prefix="blockcert-gpu-") as tmp:
        seconds = cuda_seconds(lambda: blockcert.run(loaded=big, prompts=str(ckpt / "prompts.txt"), blocks="0,5,10,15,20",
                                                     out=Path(tmp) / "run", batch_size=args.batch_size, device="cuda"))
    print(f"TinyLlama-shaped run, 5 blocks × 10 prompts × 256 tokens: {seconds:.1f} s (the paper: 118 s on an H100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
