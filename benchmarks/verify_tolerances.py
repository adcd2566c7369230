"""How far honest recomputations of the same certificate differ, in rounding units: the data behind the
verifier's tolerances (docs/verification.md, "Tolerances").

On the default model (float32) and the default prompts, for every block:

* trace reproduction: the residual stream re-captured with 1 torch thread vs 2 threads, per token
  ||x_1 - x_2|| / (u32 ||x||), u32 = 2^-24 (what ``verify --level full`` compares against ``trace_units``);
* replay: e(p,t) from the torch float32 replay with 1 vs 2 threads, and from the numpy float64 reference,
  per token |e_a - e_b| / (u32 ||x_t||) (what ``replay_units`` bounds);
* suffix losses: the stitched token losses with 1 vs 2 threads, max |Δ| in nats (``loss_abs``).

Each line prints the largest ratio measured in this one run next to the unit count the verifier allows.
    python benchmarks/verify_tolerances.py [--model NAME] [--blocks 0,5,10,15,20] [--prompts builtin:stress]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import blockcert
from blockcert.interpreter import replay
from blockcert.metrics import token_errors, token_norms
from blockcert.pipeline.certify import measure_block
from blockcert.pipeline.promptsets import load_prompts
from blockcert.pipeline.trace import capture
from blockcert.verifier.core import Tolerances

U32 = 2.0 ** -24


def per_token_units(a: np.ndarray, b: np.ndarray, ref: np.ndarray) -> float:
    gap = token_errors(a, b)
    return float(np.max(gap / (U32 * np.maximum(token_norms(ref), 1e-30))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--blocks", default=None, help="comma-separated block indices (default: all)")
    ap.add_argument("--prompts", default="builtin:default", help="a prompt set (default builtin:default)")
    args = ap.parse_args()
    loaded = blockcert.load_model(args.model)
    prompts = load_prompts(args.prompts)
    torch.set_num_threads(2)
    t2 = capture(loaded, prompts)
    torch.set_num_threads(1)
    t1 = capture(loaded, prompts)
    torch.set_num_threads(2)
    L = loaded.native.n_blocks
    blocks = range(L) if args.blocks is None else [int(b) for b in args.blocks.split(",")]
    trace_u = max(per_token_units(a.residual[ell], b.residual[ell], a.residual[ell]) for a, b in zip(t1, t2) for ell in range(L + 1))
    base_gap = max(float(np.max(np.abs(a.loss - b.loss))) for a, b in zip(t1, t2))
    rep_threads = rep_numpy = loss_gap = 0.0
    for ell in blocks:
        ir = blockcert.to_ir(loaded, ell)
        for t in t2:
            x_in, x_out = t.residual[ell], t.residual[ell + 1]
            outs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                outs.append(replay(ir, torch.from_numpy(x_in)[None]).output[0].numpy())
            torch.set_num_threads(2)
            y64 = replay(ir, x_in.astype(np.float64)[None]).output[0]
            e1, e2, e64 = (token_errors(y, x_out) for y in (*outs, y64))
            scale = U32 * np.maximum(token_norms(x_out), 1e-30)
            rep_threads = max(rep_threads, float(np.max(np.abs(e1 - e2) / scale)))
            rep_numpy = max(rep_numpy, float(np.max(np.abs(e2 - e64) / scale)))
        ms = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ms.append(measure_block(loaded, t2, ir, ell, batch_size=8))
        torch.set_num_threads(2)
        loss_gap = max(loss_gap, max(float(np.max(np.abs(a - b))) for a, b in zip(ms[0].stitched, ms[1].stitched)))
    torch_tol, numpy_tol = Tolerances.for_reference("torch"), Tolerances.for_reference("numpy")
    print(f"model {loaded.name}, {args.prompts} ({len(prompts)} prompts), blocks {list(blocks)}")
    print(f"trace 1 vs 2 threads     max {trace_u:10.2f} u32*||x||   allowed trace_units {torch_tol.trace_units:g}")
    print(f"baseline losses 1 vs 2   max {base_gap:10.3g} nats       allowed loss_abs {torch_tol.loss_abs:g}")
    print(f"replay torch 1 vs 2      max {rep_threads:10.2f} u32*||x||   allowed replay_units (torch) {torch_tol.replay_units:g}")
    print(f"replay torch vs numpy64  max {rep_numpy:10.2f} u32*||x||   allowed replay_units (numpy) {numpy_tol.replay_units:g}")
    print(f"suffix losses 1 vs 2     max {loss_gap:10.3g} nats       allowed loss_abs {torch_tol.loss_abs:g}")


if __name__ == "__main__":
    main()
