"""``blockcert run --stream`` against the in-memory run, measured in one run: peak RSS, wall time, same bytes.

    .venv/bin/python benchmarks/stream_costs.py [--ckpt DIR | --shape tinyllama --dtype float32]
        [--blocks 0,5,10,15,20] [--prompts FILE] [--pairs 1] [--stream-only] [--check]

Each side is a child process running the real command line, ``python -m blockcert run --model CKPT
--prompts FILE --blocks B --out DIR [--stream]``, so that its peak resident set size is that process's
alone (``ru_maxrss`` from ``os.wait4``: anonymous memory plus the mapped file pages it touched). The
sides alternate (memory, stream; stream, memory; ...) over ``--pairs`` pairs and each ratio is the
median over pairs of stream ÷ memory, so both sides of a pair see about the same machine load. The
first pair's two output directories are compared file by file: every certificate, IR, trace and
summary must be byte-identical.

Without ``--ckpt`` a synthetic checkpoint of ``--shape``/``--dtype`` is written once (``blockcert synth``)
under ``--cache``. ``--stream-only`` runs only the streaming side (for checkpoints larger than RAM)
and prints its peak RSS and wall time.

Targets (issue #10): peak RSS stream ÷ memory <= 0.3, wall time stream ÷ memory <= 1.2, identical
certificates. ``--check`` exits 1 if one is missed.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

TARGET_RSS = 0.3
TARGET_TIME = 1.2


def run_child(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit status) of one child process."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, proc.returncode  # ru_maxrss is in KiB on Linux


def differing(a: Path, b: Path) -> list[str]:
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    fa, fb = files(a), files(b)
    return sorted((fa ^ fb) | {f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False)})


def model_bytes(ckpt: Path, dtype: str) -> tuple[int, int]:
    """(bytes on disk, bytes as the in-memory model at ``dtype``) from the safetensors headers."""
    from safetensors import safe_open

    index = ckpt / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    params = 0
    for name in files:
        with safe_open(ckpt / name, "pt") as f:
            params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    disk = sum((ckpt / n).stat().st_size for n in files)
    return disk, params * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a safetensors checkpoint directory (default: a synthetic one)")
    parser.add_argument("--shape", default="tinyllama", help="synthetic shape without --ckpt (default tinyllama)")
    parser.add_argument("--weights-dtype", default="float32", help="synthetic weights' dtype without --ckpt (default float32)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "blockcert-synth", help="where synthetic checkpoints go")
    parser.add_argument("--dtype", default="float32", help="blockcert run --dtype (default float32)")
    parser.add_argument("--blocks", default="0,5,10,15,20")
    parser.add_argument("--prompts", type=Path, help="prompt file (default: CKPT/prompts.txt, 10 x 256 tokens)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=1, help="alternating (memory, stream) pairs (default 1)")
    parser.add_argument("--stream-only", action="store_true", help="run only the streaming side")
    parser.add_argument("--keep", type=Path, help="keep the output directories here (default: a temporary directory)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    ckpt = args.ckpt
    if ckpt is None:
        from blockcert.model.synthetic import cached_checkpoint

        ckpt = cached_checkpoint(args.cache, args.shape, args.weights_dtype, announce=lambda m: print(m, flush=True))
    prompts = args.prompts or ckpt / "prompts.txt"
    disk, in_memory = model_bytes(ckpt, args.dtype)
    n_prompts = len([line for line in prompts.read_text().splitlines() if line.strip()])
    print(f"checkpoint {ckpt}: {disk / 2**30:.2f} GiB on disk, {in_memory / 2**30:.2f} GiB as the model at --dtype {args.dtype}")
    print(f"blockcert run --blocks {args.blocks} --prompts {prompts} ({n_prompts} prompts) --batch-size {args.batch_size}")
    print(f"{date.today().isoformat()}  python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    load_before = os.getloadavg()[0]

    work = args.keep or Path(tempfile.mkdtemp(prefix="blockcert-stream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sides = ("stream",) if args.stream_only else ("memory", "stream")
    samples: dict[str, list[tuple[float, int]]] = {s: [] for s in sides}
    for pair in range(args.pairs):
        order = sides if pair % 2 == 0 else sides[::-1]
        for side in order:
            out = work / f"{side}-{pair}"
            cmd = [sys.executable, "-m", "blockcert", "run", "--model", str(ckpt), "--prompts", str(prompts), "--blocks", args.blocks,
                   "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--out", str(out), "--force", "--json"]
            if side == "stream":
                cmd.append("--stream")
            wall, rss, code = run_child(cmd, work / f"{side}-{pair}.log")
            if code != 0:
                print(f"{side} run failed (exit {code}); see {work / f'{side}-{pair}.log'}")
                return 1
            samples[side].append((wall, rss))
            print(f"  pair {pair} {side:>6}: {wall:8.1f} s, peak RSS {rss / 2**30:6.2f} GiB   (load {os.getloadavg()[0]:.2f})", flush=True)
    load_after = os.getloadavg()[0]
    print()
    rows, missed = [], []
    if args.stream_only:
        wall, rss = samples["stream"][0]
        print(f"stream: wall {wall:.1f} s, peak RSS {rss / 2**30:.2f} GiB "
              f"({rss / in_memory:.3f} of the model's {in_memory / 2**30:.2f} GiB at --dtype {args.dtype})")
    else:
        rss_ratio = statistics.median(s[1] / m[1] for s, m in zip(samples["stream"], samples["memory"]))
        time_ratio = statistics.median(s[0] / m[0] for s, m in zip(samples["stream"], samples["memory"]))
        diff = differing(work / "memory-0", work / "stream-0")
        rows = [("peak RSS stream / memory", statistics.median(s[1] for s in samples["stream"]) / 2**30,
                 statistics.median(m[1] for m in samples["memory"]) / 2**30, "GiB", rss_ratio, TARGET_RSS),
                ("wall time stream / memory", statistics.median(s[0] for s in samples["stream"]),
                 statistics.median(m[0] for m in samples["memory"]), "s", time_ratio, TARGET_TIME)]
        print(f"{'ratio':<26} {'stream':>10} {'memory':>10} {'ratio':>7} {'target':>8}  status")
        for name, s, m, unit, value, target in rows:
            ok = value <= target
            missed += [] if ok else [name]
            print(f"{name:<26} {s:>8.2f}{unit:>2} {m:>8.2f}{unit:>2} {value:>7.3f} {'<= ' + format(target, 'g'):>8}  {'ok' if ok else 'MISSED'}")
        files = sum(1 for p in (work / "memory-0").rglob("*") if p.is_file())
        print(f"{'outputs byte-identical':<26} {'yes' if not diff else 'NO: ' + ', '.join(diff[:5])} ({files} files compared)")
        missed += ["identical outputs"] if diff else []
    print(f"load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    if max(load_before, load_after) > (os.cpu_count() or 1) + 0.5:
        print("warning: other processes competed for the CPUs; wall times (not RSS) are noisy")
    print(f"outputs and logs in {work}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
