"""The directional-edit sweep from Python (docs/edits.md, "Directional edits"); the CLI equivalent is

    blockcert edit direction-sweep --layers 6,10,14,18,22 --scales 0.5,1,2 --out direction-sweep

For each layer ℓ: the refusal direction at x^(ℓ), ``direction-ablate:layers=all`` with it, and
``direction-add:layer=ℓ`` with α = s × ‖mean difference‖ for each scale s. Every configuration is an edit
certificate under ``OUT/edits/`` (``blockcert verify`` each). This script then prints, per layer, the scale that
flips most refusals on with the fewest benign answers lost: the kind of question the sweep is for.

    .venv/bin/python examples/direction_sweep.py --layers 18,22 --scales 1,2 --out direction-sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

import blockcert
from blockcert.edit.certify import Decoding
from blockcert.edit.dirsweep import direction_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="registered name or path (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--layers", default="18,22")
    ap.add_argument("--scales", default="1,2")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=Path("direction-sweep"))
    args = ap.parse_args()
    loaded = blockcert.load_model(args.model)
    result = direction_sweep(loaded=loaded, layers=[int(v) for v in args.layers.split(",")],
                             scales=[float(v) for v in args.scales.split(",")], out=args.out,
                             decoding=Decoding(max_new_tokens=args.max_new_tokens), progress=True)
    base = result.base
    print(f"unedited: answer {base['answer_correct']}/{base['n_answer']}, refuse {base['refuse_correct']}/{base['n_refuse']}")
    for layer in sorted({r.layer for r in result.rows}):
        ablate = next(r for r in result.rows if r.layer == layer and r.edit == "ablate")
        adds = [r for r in result.rows if r.layer == layer and r.edit == "add"]
        best = max(adds, key=lambda r: (r.refuse_change.gained - r.answer_change.lost, -r.kl_mean), default=None)
        line = (f"layer {layer}: ablating everywhere loses {ablate.refuse_change.lost} refusals "
                f"(p {ablate.refuse_change.p_value:.2g}, KL {ablate.kl_mean:.3g} nats)")
        if best is not None:
            line += (f"; adding {best.scale:g}× gains {best.refuse_change.gained} refusals and loses "
                     f"{best.answer_change.lost} benign answers (KL {best.kl_mean:.3g})")
        print(line)
    print(f"table: {args.out / 'results.md'}; certificates: {args.out / 'edits'}/")


if __name__ == "__main__":
    main()
