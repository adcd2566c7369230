"""What an edit sweep costs on the default model, and what reusing the unedited prefix could save, in one run.

    .venv/bin/python benchmarks/edit_sweep_costs.py [--repeats 5] [--blocks 0,4,8,12,16,20,24,28]
        [--alphas 0,0.25,0.33,0.5,1] [--max-new-tokens 48] [--batch-size 24]

On the built-in refusal corpus (24 prompts, chat template), batched and padded exactly as
``blockcert.edit.certify.generate`` batches them, three things are timed alternately in one process (G P, P G, ...):

* **G**: one greedy generation of the corpus (``blockcert.edit.certify.generate``, the unit of a sweep);
* **P**: the prompt prefill alone (one HF forward over the same left-padded batches, with a KV cache), the
  part of a generation that an edit at block l could share with the unedited model for blocks < l;
* **E**: one generation with ``mlp-scale`` at the middle block of ``--blocks`` (``α`` = the first α < 1), to
  show an edit costs what an unedited generation costs.

From the medians it prints the predicted sweep time (generations × G, α = 1 rows reuse the unedited
completions), and the most that prefix reuse could save: a configuration at block l would skip l/L of the
prefill, so at most Σ_l (l/L)·P over the edited configurations, as a share of the sweep.

This is what docs/edits.md quotes; the whole sweep itself is ``blockcert edit sweep`` (its results.json
records its wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="alternating samples of each side (default 5)")
    parser.add_argument("--blocks", default="0,4,8,12,16,20,24,28")
    parser.add_argument("--alphas", default="0,0.25,0.33,0.5,1")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=24)
    args = parser.parse_args()

    import torch

    import blockcert
    from blockcert.edit.certify import Decoding, edit_handle, generate, load_corpus, prompt_texts

    blocks = [int(b) for b in args.blocks.split(",")]
    alphas = [float(a) for a in args.alphas.split(",")]
    loaded = blockcert.load_model()
    items, _ = load_corpus()
    decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    tok = loaded.tokenizer
    texts = prompt_texts(loaded, items, decoding)
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    encoded = [tok(texts[s : s + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
               for s in range(0, len(texts), args.batch_size)]
    tok.padding_side, tok.pad_token = side, pad
    L = loaded.native.n_blocks
    middle = blocks[len(blocks) // 2]
    edited_alpha = next((a for a in alphas if a != 1.0), 0.0)
    handle = edit_handle(loaded, f"mlp-scale:block={middle},alpha={edited_alpha!r}")

    def gen() -> None:
        generate(loaded, items, decoding)

    @torch.no_grad()
    def prefill() -> None:
        for enc in encoded:
            loaded.model(**enc, use_cache=True)

    def edited() -> None:
        with handle:
            generate(loaded, items, decoding)

    print(f"{date.today().isoformat()}  python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f}")
    shapes = ", ".join(f"{tuple(e['input_ids'].shape)}" for e in encoded)
    print(f"{loaded.name}: {len(items)} prompts in batches {shapes}, {args.max_new_tokens} new tokens, greedy")
    gen()  # warm-up: first-call allocations and kernel selection
    samples: dict[str, list[float]] = {"G": [], "P": [], "E": []}
    sides = [("G", gen), ("P", prefill), ("E", edited)]
    for r in range(args.repeats):
        for name, fn in sides if r % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    g, p, e = (statistics.median(samples[k]) for k in "GPE")
    n_edited = sum(a != 1.0 for a in alphas) * len(blocks)
    sweep = (1 + n_edited) * g
    saved = sum(b / L * p for b in blocks for a in alphas if a != 1.0)
    print(f"G  one unedited generation          {g:8.2f} s   (median of {args.repeats})")
    print(f"P  its prompt prefill alone         {p:8.2f} s   P / G = {p / g:.3f}")
    print(f"E  one generation, mlp-scale at block {middle}, alpha {edited_alpha:g}  {e:8.2f} s   E / G = {e / g:.3f}")
    print(f"sweep over blocks {args.blocks} x alphas {args.alphas}: {1 + n_edited} generations, predicted {sweep:.0f} s")
    print(f"prefix reuse could save at most sum_l (l/L) P = {saved:.1f} s, {saved / sweep:.1%} of the sweep")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
