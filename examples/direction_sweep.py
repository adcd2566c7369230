"""A directional-edit sweep over layers (docs/edits.md, "Directional edits"): for each layer ℓ, the refusal
direction at x^(ℓ), then two certified edits:

* ``direction-ablate:layers=all`` with that direction (does removing it remove refusals?), and
* ``direction-add:layer=ℓ,alpha=a`` for each ``--scale`` s, with a = s × ‖mean difference‖ (s = 1 adds the
  difference of means itself, as Arditi et al. do; does adding it make the model refuse benign requests?).

Every configuration is an ordinary edit certificate under ``--out`` (``blockcert verify`` them); ``results.json``
and ``results.md`` (a table) summarise answer/refuse accuracy and the locality metrics.

    .venv/bin/python examples/direction_sweep.py --layers 6,10,14,18,22 --out direction-sweep
    .venv/bin/python examples/direction_sweep.py --model qwen2.5-coder-0.5b --layers 4,8,12,16,20 --out qwen-direction-sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blockcert
from blockcert.edit.certify import Decoding, certify_edit
from blockcert.edit.direction import make_direction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="registered name or path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--layers", default="6,10,14,18,22")
    ap.add_argument("--scales", default="1", help="direction-add strengths as multiples of ‖mean difference‖")
    ap.add_argument("--corpus", default="builtin:refusal")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", type=Path, default=Path("direction-sweep"))
    args = ap.parse_args()
    loaded = blockcert.load_model(args.model, dtype=args.dtype)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    rows = []
    start = time.perf_counter()
    for layer in (int(v) for v in args.layers.split(",")):
        d_dir = args.out / f"direction-L{layer:02d}"
        d = make_direction(loaded, layer=layer, out=d_dir, corpus=args.corpus, force=True)
        norm = d.meta["norm_before_normalising"]
        specs = [f"direction-ablate:layers=all,direction={d_dir}"]
        specs += [f"direction-add:layer={layer},alpha={round(float(s) * norm, 3)!r},direction={d_dir}" for s in args.scales.split(",")]
        for spec in specs:
            kind = spec.split(":")[0]
            out = args.out / f"edit-L{layer:02d}-{kind}" if kind == "direction-ablate" else args.out / f"edit-L{layer:02d}-{kind}-{spec.split('alpha=')[1].split(',')[0]}"
            t = time.perf_counter()
            r = certify_edit(loaded=loaded, spec=spec, out=out, corpus=args.corpus, decoding=decoding, force=True)
            loc = r.locality
            rows.append({"layer": layer, "spec": r.spec, "out": str(out), "norm": norm, "separation": d.meta["projection"]["separation"],
                         "before": {"answer": r.before.answer_correct, "refuse": r.before.refuse_correct},
                         "after": {"answer": r.after.answer_correct, "refuse": r.after.refuse_correct},
                         "n": {"answer": r.after.n_answer, "refuse": r.after.n_refuse},
                         "kl_mean": loc["neutral"]["kl_mean"], "kl_max": loc["neutral"]["kl_max"],
                         "benign_unchanged": loc["benign"]["unchanged"], "ppl_base": loc["stress"]["ppl_base"],
                         "ppl_edited": loc["stress"]["ppl_edited"], "epsilon_edit": r.deviation.epsilon_edit,
                         "seconds": time.perf_counter() - t})
            print(json.dumps(rows[-1]), flush=True)
    result = {"model": loaded.name, "dtype": loaded.dtype, "corpus": args.corpus, "max_new_tokens": args.max_new_tokens,
              "rows": rows, "seconds": time.perf_counter() - start}
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| layer | edit | ‖μ_refuse − μ_answer‖ | separation | answer (before → after) | refuse (before → after) | "
             "benign unchanged | KL mean / max (nats) | stress PPL (before → after) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        edit = "ablate, all layers" if r["spec"].startswith("direction-ablate") else f"add, α = {r['spec'].split('alpha=')[1].split(',')[0]}"
        lines.append(f"| {r['layer']} | {edit} | {r['norm']:.2f} | {r['separation']:.2f} | {r['before']['answer']} → {r['after']['answer']} "
                     f"/ {r['n']['answer']} | {r['before']['refuse']} → {r['after']['refuse']} / {r['n']['refuse']} | "
                     f"{r['benign_unchanged']}/{r['n']['answer']} | {r['kl_mean']:.3g} / {r['kl_max']:.3g} | "
                     f"{r['ppl_base']:.2f} → {r['ppl_edited']:.2f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
