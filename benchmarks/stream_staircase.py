"""Loss coverage of every block in one staircase pass ÷ (L × one clean forward), measured in one run.

    .venv/bin/python benchmarks/stream_staircase.py [--ckpt DIR | --shape tinyllama] [--prompts 2] [--tokens 256]
        [--spot 5,20] [--in-memory] [--check]

On a (streamed, unless ``--in-memory``) checkpoint, for ``--prompts`` synthetic prompts of ``--tokens``
tokens batched as ``blockcert run`` batches them:

* the traces are captured and every block's IR is extracted and replayed on them (not timed: that is
  the extraction's cost, not loss coverage's);
* **S**: ``blockcert.pipeline.staircase.suffix_losses`` for all L blocks at once — one pass over blocks 0..L-1
  that advances every replaced variant through each block, then the head and the token NLLs of all L
  variants: the whole loss-coverage work of a run over all blocks;
* **F**: one clean forward with loss over the same batches (embed, L native blocks, head, NLL), sampled
  before and after S (median of the samples).

Ratio S ÷ (L × F), target <= 0.6 (issue #10). The arithmetic floor: L(L-1)/2 suffix block passes and L
heads against L × (L blocks + 1 head), about 0.5 for large L.

Spot checks (``--spot``): for each block l, the stitched losses from the staircase are compared with
(a) the naive computation, block by block (block l alone: replay, then blocks l+1..L-1 and the head on
the same padded batches, the loop BlockCert ran before the staircase): target max |Δ| <= 1e-6; and (b) one
prompt at a time, unpadded, with ``log_softmax`` + gather instead of BlockCert's ``prompt_nll``: other
matrix shapes, so other float32 rounding (a few ulps of a loss near ln V ≈ 10, where one ulp is 9.5e-7):
target max |Δ| / max(1, |loss|) <= 1e-6.
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
from datetime import date
from pathlib import Path

import numpy as np
import torch

import blockcert
from blockcert.pipeline.staircase import pad_rows, suffix_losses
from blockcert.model.synthetic import cached_checkpoint, synthetic_prompts
from blockcert.pipeline.trace import batches, capture, pad_batch, prompt_nll

TARGET_RATIO = 0.6
TARGET_SPOT = 1e-6


@torch.no_grad()
def forward_with_loss(loaded, traces, batch_size: int) -> None:
    native = loaded.native
    for group in batches(len(traces), batch_size):
        ids = pad_batch([traces[k].input_ids for k in group])
        positions = torch.arange(ids.shape[1])[None].expand(ids.shape)
        x = native.embed(ids, positions)
        for j in range(native.n_blocks):
            x = native.call_block(j, x, positions)
        prompt_nll(native, x, ids, [traces[k].n_tokens for k in group])


@torch.no_grad()
def block_by_block(loaded, traces, outputs, index: int, batch_size: int) -> list[np.ndarray]:
    """Block ``index`` alone: its replay outputs through blocks index+1..L-1 and the head, batch by batch."""
    native, out = loaded.native, []
    for group in batches(len(traces), batch_size):
        x = pad_rows([outputs[k] for k in group]).to(native.dtype)
        positions = torch.arange(x.shape[1])[None].expand(x.shape[:2])
        for j in range(index + 1, native.n_blocks):
            x = native.call_block(j, x, positions)
        out += prompt_nll(native, x, pad_batch([traces[k].input_ids for k in group]), [traces[k].n_tokens for k in group])
    return out


@torch.no_grad()
def one_prompt_at_a_time(loaded, traces, outputs, index: int) -> list[np.ndarray]:
    native, out = loaded.native, []
    for t, y in zip(traces, outputs):
        x = torch.from_numpy(y)[None].to(native.dtype)
        for j in range(index + 1, native.n_blocks):
            x = native.call_block(j, x, torch.arange(t.n_tokens)[None])
        logp = torch.log_softmax(native.head(x)[0, :-1].float(), -1)
        out.append(-logp.gather(-1, torch.from_numpy(t.input_ids[1:])[:, None])[:, 0].numpy())
    return out


def timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a safetensors checkpoint directory (default: a synthetic one)")
    parser.add_argument("--shape", default="tinyllama")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "blockcert-synth")
    parser.add_argument("--prompts", type=int, default=2, help="synthetic prompts (default 2)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per prompt (default 256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--spot", default="5,20", help="blocks to check against the naive computations (default 5,20)")
    parser.add_argument("--forwards", type=int, default=2, help="clean-forward samples, half before and half after S (default 2)")
    parser.add_argument("--in-memory", action="store_true", help="load the whole model instead of streaming it")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    ckpt = args.ckpt or cached_checkpoint(args.cache, args.shape, "float32", announce=lambda m: print(m, flush=True))
    loaded = blockcert.load_model(ckpt, stream=not args.in_memory)
    native = loaded.native
    L = native.n_blocks
    texts = synthetic_prompts(args.prompts, args.tokens, seed=1)
    load_before = os.getloadavg()[0]
    print(f"model {ckpt} ({L} blocks, d={native.d_model}, {loaded.dtype}, {'in memory' if args.in_memory else 'streamed'}), "
          f"{args.prompts} prompts x {args.tokens} tokens, batch size {args.batch_size}")
    print(f"{date.today().isoformat()}  torch {torch.__version__}, {torch.get_num_threads()} threads, python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load_before:.2f}")

    traces = capture(loaded, texts, batch_size=args.batch_size)
    outputs = {}
    for index in range(L):  # every block's replacement: its IR replayed on the traces (not timed)
        ir = blockcert.to_ir(loaded, index, args.tokens)
        outputs[index] = [blockcert.replay(ir, torch.from_numpy(t.residual[index])[None]).output[0].numpy() for t in traces]
        del ir
    print(f"captured and extracted {L} blocks; timing ...", flush=True)

    forwards = [timed(lambda: forward_with_loss(loaded, traces, args.batch_size)) for _ in range((args.forwards + 1) // 2)]
    losses: dict[int, list[np.ndarray]] = {}
    staircase = timed(lambda: losses.update(suffix_losses(loaded, traces, range(L), lambda i: outputs[i], args.batch_size)))
    forwards += [timed(lambda: forward_with_loss(loaded, traces, args.batch_size)) for _ in range(args.forwards // 2)]
    F = statistics.median(forwards)
    ratio = staircase / (L * F)
    missed = []
    print()
    print(f"S  loss coverage, all {L} blocks, one staircase pass   {staircase:9.1f} s")
    print(f"F  one clean forward with loss (median of {len(forwards)}: {', '.join(f'{f:.1f}' for f in forwards)} s)  {F:9.1f} s")
    print(f"S / (L x F) = {ratio:.3f}   target <= {TARGET_RATIO}   {'ok' if ratio <= TARGET_RATIO else 'MISSED'}"
          f"   (arithmetic floor with a head as heavy as a block: {(L * (L - 1) / 2 + L) / (L * (L + 1)):.3f})")
    missed += [] if ratio <= TARGET_RATIO else ["ratio"]
    for index in (int(b) for b in args.spot.split(",") if b.strip()):
        a = max(float(np.abs(x - y).max()) for x, y in zip(losses[index], block_by_block(loaded, traces, outputs[index], index, args.batch_size)))
        single = one_prompt_at_a_time(loaded, traces, outputs[index], index)
        b = max(float(np.abs(x - y).max()) for x, y in zip(losses[index], single))
        b_rel = max(float((np.abs(x - y) / np.maximum(1.0, np.abs(y))).max()) for x, y in zip(losses[index], single))
        ok = a <= TARGET_SPOT and b_rel <= TARGET_SPOT
        missed += [] if ok else [f"spot {index}"]
        print(f"block {index:>3}: max |staircase - block by block| = {a:.3g} (target <= {TARGET_SPOT:g}); "
              f"staircase vs one prompt at a time: max |diff| = {b:.3g}, relative {b_rel:.3g} (target <= {TARGET_SPOT:g})"
              f"   {'ok' if ok else 'MISSED'}")
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    if max(load_before, load_after) > (os.cpu_count() or 1) + 0.5:
        print("warning: other processes competed for the CPUs; the ratio is noisy")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
