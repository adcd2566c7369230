"""IR replay time ÷ native block time on the default model, measured in one run.

    .venv/bin/python benchmarks/replay_vs_native.py [--blocks 0,15,29] [--repeats 20]

Prints, per block, the median time of the native HF block call, of the torch float32 IR replay and of
the numpy float64 reference replay on the same recorded inputs (one unpadded sequence: the default
prompts joined), and the two ratios. The three are sampled round-robin so they see the same load.
benchmarks/run_costs.py measures the replay ratio on ``blockcert run``'s padded batches instead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import blockcert
from blockcert.prompts import builtin


def interleaved_medians(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, sampled round-robin (order reversed every other round) so that
    all of them see the same machine load; one warm-up call each first."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns))) if r % 2 == 0 else list(reversed(range(len(fns))))
        for i in order:
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default="0,15,29")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    m = blockcert.load_model()
    text = " ".join(builtin("default"))
    ids = m.tokenizer(text, return_tensors="pt")["input_ids"]
    xs = m.native.residual_stream(ids)
    positions = torch.arange(ids.shape[1])[None]
    print(f"model {m.name}, {ids.shape[1]} tokens, torch threads {torch.get_num_threads()}")
    print(f"{'block':>5} {'native ms':>10} {'IR torch ms':>12} {'IR numpy ms':>12} {'torch/native':>13} {'numpy/native':>13}")
    for index in (int(b) for b in args.blocks.split(",")):
        ir = blockcert.to_ir(m, index, n_ctx=ids.shape[1])
        x = xs[index]
        x64 = x.double().numpy()
        with torch.no_grad():
            t_native, t_torch, t_numpy = interleaved_medians(
                [lambda: m.native.call_block(index, x, positions), lambda: blockcert.replay(ir, x),
                 lambda: blockcert.replay(ir, x64)], args.repeats)
        print(f"{index:>5} {t_native * 1e3:>10.2f} {t_torch * 1e3:>12.2f} {t_numpy * 1e3:>12.2f} "
              f"{t_torch / t_native:>13.2f} {t_numpy / t_native:>13.2f}")


if __name__ == "__main__":
    main()
