"""IR replay time ÷ native block time on the default model, measured in one run.

    .venv/bin/python benchmarks/replay_vs_native.py [--blocks 0,15,29] [--repeats 20]

Prints, per block, the median time of the native HF block call, of the torch float32 IR replay and of
the numpy float64 reference replay on the same recorded inputs, and the two ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import blockcert
from blockcert.prompts import builtin


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
            t_native = median_time(lambda: m.native.call_block(index, x, positions), args.repeats)
            t_torch = median_time(lambda: blockcert.replay(ir, x), args.repeats)
        t_numpy = median_time(lambda: blockcert.replay(ir, x64), args.repeats)
        print(f"{index:>5} {t_native * 1e3:>10.2f} {t_torch * 1e3:>12.2f} {t_numpy * 1e3:>12.2f} "
              f"{t_torch / t_native:>13.2f} {t_numpy / t_native:>13.2f}")


if __name__ == "__main__":
    main()
