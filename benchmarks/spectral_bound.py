"""Certified spectral-norm bound vs the exact SVD on a random float32 matrix, measured in one run.

    .venv/bin/python benchmarks/spectral_bound.py [--rows 4096] [--cols 11008] [--repeats 3]
                                                 [--svd-repeats 1] [--methods auto,gram] [--threads N]

For each method of ``blockcert.bounds.spectral_upper_bound`` it prints the median wall time over
``--repeats`` runs, the bound, and two ratios: bound time / SVD time (target <= 0.1) and
bound / sigma_max (target <= 1.01). The reference is the exact largest singular value from
``np.linalg.svd(W.astype(float64), compute_uv=False)`` (the cheapest exact alternative: singular values
only), timed ``--svd-repeats`` times (it takes minutes on 2 cores). ``--threads`` sets the BLAS thread
count (OPENBLAS/OMP/MKL_NUM_THREADS) before numpy is imported; the default leaves it alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=11008)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per bound method (median reported)")
    parser.add_argument("--svd-repeats", type=int, default=1, help="timed runs of the full SVD (median reported)")
    parser.add_argument("--methods", default="auto,gram", help="comma-separated spectral_upper_bound methods")
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (set before importing numpy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import numpy as np

    from blockcert.bounds import spectral_upper_bound

    W = np.random.default_rng(args.seed).standard_normal((args.rows, args.cols)).astype(np.float32)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"W: {args.rows}x{args.cols} float32 (seed {args.seed}); numpy {np.__version__}; "
          f"{os.cpu_count()} cpus, BLAS threads {threads}; {platform.processor() or platform.machine()}")

    svd_times, sigma = [], 0.0
    for _ in range(max(1, args.svd_repeats)):
        start = time.perf_counter()
        sigma = float(np.linalg.svd(W.astype(np.float64), compute_uv=False)[0])
        svd_times.append(time.perf_counter() - start)
    t_svd = statistics.median(svd_times)
    print(f"full SVD (float64, values only): {t_svd:8.2f} s   sigma_max = {sigma:.12g}   runs {[round(t, 2) for t in svd_times]}")

    print(f"{'method':>14} {'time s':>8} {'time/SVD':>9} {'bound/sigma':>12} {'lower/sigma':>12} {'steps':>5}  runs")
    for method in args.methods.split(","):
        times, result = [], None
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            result = spectral_upper_bound(W, method)
            times.append(time.perf_counter() - start)
        assert result is not None
        t = statistics.median(times)
        ok = "OK " if result.value >= sigma else "BELOW SIGMA!"
        label = method if method == result.method else f"{method}->{result.method}"
        print(f"{label:>14} {t:8.2f} {t / t_svd:9.4f} {result.value / sigma:12.6f} {result.lower / sigma:12.9f} "
              f"{result.iterations:>5}  {[round(x, 2) for x in times]} {ok}")


if __name__ == "__main__":
    main()
