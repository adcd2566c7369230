"""The Markdown report (``blockcert report --format md``): the numbers of the HTML page as tables, for a pull
request or a paper. No heat maps; for each block in the per-token section, the tokens with the largest errors."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from blockcert import __version__
from blockcert.report.svg import fmt
from blockcert.report.views import RunView

WORST_TOKENS = 5


def _cell(text: object) -> str:
    """A table cell: no line breaks, pipes escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as an inline code span, fenced with more backticks than it contains."""
    text = text.replace("\n", "↵").replace("\r", "␍")
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if k else ":---" for k in range(len(head))) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def _yn(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def render_md(view: RunView) -> str:
    from blockcert.bounds.compose import ranges

    m, p, pol = view.manifest["model"], view.manifest["prompts"], view.policy
    n = len(view.blocks)
    tokens = view.blocks[0].predicate["prompts"]["tokens"] if view.blocks else 0
    out = [f"# BlockCert report: {_cell(m['name'])}", ""]
    failing = [b.index for b in view.blocks if not b.certified]
    n_ver = sum(b.verification.ok for b in view.blocks)
    out += [
        f"- **Model**: {_code(m['name'])} ({m['arch']}, {m['dtype']}, L = {m['n_blocks']}, d = {m['d_model']}), "
        f"weights sha256 {_code(m['weights_sha256'])}",
        f"- **Prompts**: {_code(p['description'])}, {p['count']} prompts, {tokens} tokens, sha256 {_code(p['sha256'])}",
        f"- **Policy**: τ_act = {pol['tau_act']:g}, τ_loss = {pol['tau_loss']:g}, "
        f"α_act = {pol['alpha_act']:g}, α_loss = {pol['alpha_loss']:g}",
        f"- **Certified**: {view.n_certified} of {n} blocks" + (f" (not certified: {ranges(failing)})" if failing else ""),
        f"- **Verification** (`blockcert verify --level hashes`: internal consistency, nothing replayed): "
        f"{n_ver} of {n} block certificates are consistent"
        + (f"; full-model certificate {'consistent' if view.full.verification.ok else '**FAILS**'}"
           if view.full is not None and view.full.verification is not None else "")
        + ("" if view.verified else " — **verification failed**"),
    ]
    if view.derivation:
        out.append(f"- **Derivation**: {view.derivation['kind']} {_code(view.derivation_spec or '')} (metrics are about the derived IR)")
    out += ["", "## Blocks", ""]
    derived = any(b.derivation for b in view.blocks)
    head = ["block", "certified", "consistent (hashes)", "ε", "MAE", "rel max", "cov_act", "cov_path", "cov_loss"]
    head += ["derivation"] if derived else []
    rows = []
    for b in view.blocks:
        x = b.metrics
        row = [str(b.index), _yn(b.certified), _yn(b.verification.ok), fmt(x["epsilon"]), fmt(x["mae"]), fmt(x["rel_max"]),
               f"{x['cov_act']:.4f}", f"{x['cov_path']:.4f}", f"{x['cov_loss']:.4f}"]
        if derived:
            row.append(_code(b.derivation["spec"]) if b.derivation else "extraction")
        rows.append(row)
    out += _table(head, rows)
    if view.token_blocks:
        out += ["## Tokens with the largest errors", "", f"Blocks: {view.token_blocks_reason}. Tokens shown as {view.tokens_source}.", ""]
        for index in view.token_blocks:
            b = view.block(index)
            flat = [(float(e), pv.index, t) for pv, te in zip(view.prompts, b.errors) for t, e in enumerate(te.error)]
            flat.sort(key=lambda r: -r[0])
            above = sum(e > pol["tau_act"] for e, _, _ in flat)
            worst = ", ".join(f"{_code(view.prompts[k].pieces[t])} (p{k} t{t}: {fmt(e)})" for e, k, t in flat[:WORST_TOKENS])
            out.append(f"- block {index}: {above} of {len(flat)} tokens above τ_act; largest e: {worst}")
        out.append("")
    if view.full is not None:
        x = view.full.evaluation["metrics"]
        out += ["## Stitched model", ""]
        out += _table(["", "value"], [
            ["blocks stitched", ranges(view.full.evaluation["stitched_blocks"])],
            ["perplexity baseline", f"{x['ppl_baseline']:.6f}"], ["perplexity stitched", f"{x['ppl_stitched']:.6f}"],
            ["relative Δ perplexity", f"{x['rel_delta_ppl']:.3e}"],
            ["mean / worst layer MAE", f"{fmt(x['mean_layer_mae'])} / {fmt(x['worst_layer_mae'])}"],
            ["max residual error", fmt(x["max_residual_error"])],
            [f"probe ({x['probe_prompts']}): stitched = baseline", f"{x['probe_stitched_vs_baseline']:.3f}"],
            ["probe: baseline / stitched = human label", f"{x['probe_baseline_vs_human']:.3f} / {x['probe_stitched_vs_human']:.3f}"],
        ])
    if view.bounds is not None:
        from blockcert.bounds.compose import sci_up

        out += ["## Theorem 1 (global bound)", ""]
        out += _table(["variant", "bound", "sound"], [[v.name, sci_up(v.bound.exact), _yn(v.sound)] for v in view.bounds.variants])
        if view.bounds.observed_max is not None:
            out += [f"Observed max residual error of the stitched replay: {fmt(view.bounds.observed_max)}; "
                    f"the sound bound {'holds' if view.bounds.holds else '**does not hold**'} at every layer.", ""]
    elif view.bounds_note:
        out += ["## Theorem 1 (global bound)", "", f"Not available: {view.bounds_note}", ""]
    if view.compare:
        out += ["## Comparison", "", f"Over blocks {ranges(view.compare[0].blocks)}.", ""]
        out += _table(["run", "blocks certified as", "certified", "mean cov_act", "mean cov_loss", "mean MAE", "MAE ratio", "verifies"],
                      [[_code(r.label), r.derivation, f"{r.certified}/{len(r.blocks)}", f"{r.mean_cov_act:.4f}", f"{r.mean_cov_loss:.4f}",
                        fmt(r.mean_mae), "—" if r.mae_ratio is None else f"{r.mae_ratio:.3g}×", _yn(r.verified)] for r in view.compare])
    if view.edit_sweep is not None:
        out += ["## Edit sweep", "", f"From {_code(view.edit_sweep.source)}.", ""]
        out += _table(["block", "α", "answer accuracy", "refuse accuracy"],
                      [[str(r.block), f"{r.alpha:g}", f"{r.answer_accuracy:.3f}", f"{r.refuse_accuracy:.3f}"]
                       for r in view.edit_sweep.rows])
    if view.direction_sweep is not None:
        ds = view.direction_sweep
        out += ["## Direction sweep", "", f"From {_code(ds.source)}: {ds.model} ({ds.dtype}) on {_code(ds.corpus)}, directions from "
                f"{_code(ds.direction_corpus)}.", ""]
        out += _table(["layer", "edit", "answer", "refuse", "benign unchanged", "KL mean", "stress PPL", "certificate verifies"],
                      [[str(r.layer), "ablate, all layers" if r.edit == "ablate" else f"add {r.scale:g}× (α = {r.alpha:g})",
                        f"{r.answer[0]}/{r.answer[1]}", f"{r.refuse[0]}/{r.refuse[1]}", f"{r.benign_unchanged}/{r.answer[1]}",
                        f"{r.kl_mean:.3g}", f"{r.ppl[0]:.4g} → {r.ppl[1]:.4g}", _yn(r.verifies)] for r in ds.rows])
    if view.minimize is not None:
        mz = view.minimize
        out += ["## Minimal mechanisms", "", f"From {_code(mz.source)}: {mz.model} ({mz.dtype}), budget {_code(mz.budget)}.", ""]
        out += _table(["block", "heads kept", "neurons kept", "rank kept (sum)", "cov_act", "cov_loss", "certified"],
                      [[str(r.block), f"{r.heads[0]}/{r.heads[1]}", f"{r.neurons[0]}/{r.neurons[1]}", f"{r.rank[0]}/{r.rank[1]}",
                        f"{r.cov_act:.3f}", f"{r.cov_loss:.3f}", _yn(r.certified)] for r in mz.rows])
    out += ["## Certificate ids", "", "```"]
    out += [f"{b.certificate_id}  {b.certificate}" for b in view.blocks]
    if view.full is not None and view.full.certificate_id:
        out.append(f"{view.full.certificate_id}  full/certificate.json")
    out += ["```", "", f"_Written by blockcert {__version__} (`blockcert report --format md`) from {_code(view.label)}._", ""]
    return "\n".join(out)


__all__: Sequence[str] = ["render_md"]
