"""The HTML report: one self-contained page (inline CSS and SVG, a base64 PNG, 15 lines of inline script).

The page loads nothing: a Content-Security-Policy forbids every network request and allows only the one
script below (by its SHA-256), so even a string that escaped :func:`esc` could not run. Every string from
an artifact (prompt texts above all) goes through :func:`esc`. Sections carry ``data-section`` (and
``data-empty`` when the run has nothing for them), which the browser test relies on.

Why this module is long: it is one self-contained page, its style sheet and its sections in page order;
splitting it would separate each section from the markup conventions it shares with the others.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from blockcert import __version__
from blockcert.bounds.compose import ranges
from blockcert.report.svg import (
    BAD,
    GOOD,
    NEUTRAL,
    Series,
    bar_chart,
    bucket,
    esc,
    fmt,
    heat_overview,
    legend_html,
    line_chart,
)
from blockcert.report.views import BlockView, PromptView, RunView, TokenErrors

SECTIONS = (
    ("summary", "Summary"),
    ("blocks", "Blocks"),
    ("tokens", "Per-token errors"),
    ("stitched", "Stitched model"),
    ("bounds", "Lipschitz bounds"),
    ("derivation", "Surrogates and ablations"),
    ("edit-sweep", "Edit sweep"),
    ("direction-sweep", "Direction sweep"),
    ("minimize", "Minimal mechanisms"),
    ("ids", "Certificate ids and digests"),
)

SCRIPT = """\
document.querySelectorAll("button[data-copy]").forEach(function (b) {
  b.addEventListener("click", function () {
    var el = document.getElementById(b.getAttribute("data-copy"));
    var select = function () {
      var r = document.createRange(); r.selectNodeContents(el);
      var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
      b.textContent = "selected";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(el.textContent).then(function () { b.textContent = "copied"; }, select);
    } else { select(); }
  });
});
window.addEventListener("beforeprint", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
});
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
:root{--ink:#212529;--muted:#6c757d;--line:#dee2e6;--good:#2b8a3e;--bad:#c92a2a;--bg2:#f8f9fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
 margin:0 auto;max-width:1180px;padding:0 20px 40px}
header{border-bottom:2px solid var(--ink);padding:18px 0 10px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid var(--line);z-index:2;font-size:13px}
nav a{margin-right:14px;color:#1c7ed6;text-decoration:none}
.sub,.note{color:var(--muted)}.note{font-size:13px}
.ok{color:var(--good);font-weight:600}.bad{color:var(--bad);font-weight:600}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:right;vertical-align:top}
th{background:var(--bg2);font-weight:600}
td.l,th.l{text-align:left}
table.kv td:first-child{color:var(--muted);text-align:left;white-space:nowrap}table.kv td{text-align:left}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
code.id{word-break:break-all;user-select:all}
.chart{width:100%;height:auto;display:block;margin:4px 0 10px}
.heat{max-width:100%;height:auto;display:block;margin:4px 0 10px}
.scroll{overflow-x:auto}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:0 18px}
.prompt{margin:6px 0 10px;padding:6px 8px;border:1px solid var(--line);border-radius:4px}
.prompt .h{font-size:12px;color:var(--muted);margin-bottom:3px}
.toks{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.9;
 white-space:pre-wrap;word-break:break-word}
.t{padding:1px 0;border-radius:2px}
.t.f{outline:1.5px solid #7a0000;font-weight:700}
.t.l{text-decoration:underline dashed #000;text-underline-offset:3px}
.t.p{box-shadow:inset 0 2px 0 #000}
.t.s{font-style:italic;color:#495057}
.e0{background:#f1f3f5}.e1{background:#d0ebff}.e2{background:#a5d8ff}.e3{background:#74c0fc}
.e4{background:#ffc9c9}.e5{background:#ff8787}.e6{background:#f03e3e;color:#fff}.e7{background:#a61e1e;color:#fff}
.legend .sw{display:inline-block;padding:0 6px;margin:0 2px;border-radius:2px;font-size:12px}
.legend .mk{display:inline-block;padding:0 6px;margin:0 4px;font-size:12px}
button.copy{font-size:11px;padding:0 6px;margin-left:6px;cursor:pointer}
pre.sums{background:var(--bg2);padding:8px;overflow-x:auto;font-size:11.5px;user-select:all}
section[data-empty] p.empty{color:var(--muted);font-style:italic}
details>summary{cursor:pointer;color:#1c7ed6}
@media print{nav,button.copy{display:none}body{max-width:none;padding:0}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 .prompt,figure,table,svg{break-inside:avoid}h2{break-after:avoid}.scroll{overflow:visible}}
"""


def render_html(view: RunView) -> str:
    model = view.manifest["model"]
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    body = [
        _header(view),
        "<nav>" + "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS) + "</nav>",
        _summary(view), _blocks(view), _tokens(view), _stitched(view), _bounds(view), _derivation(view), _edit_sweep(view), _direction_sweep(view), _minimize(view), _ids(view),
        f'<p class="note">Written by blockcert {esc(__version__)} (<code>blockcert report</code>) from the artifacts of '
        f"{esc(view.label)}; nothing in this page was recomputed from the model.</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP.format(hash=script_hash)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>BlockCert report: {esc(model['name'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _section(key: str, inner: str, empty: str | None = None) -> str:
    title = dict(SECTIONS)[key]
    if empty is not None:
        return f'<section id="{key}" data-section="{key}" data-empty="1"><h2>{esc(title)}</h2><p class="empty">{empty}</p></section>'
    return f'<section id="{key}" data-section="{key}"><h2>{esc(title)}</h2>\n{inner}\n</section>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], left: Sequence[int] = (0,), cls: str = "") -> str:
    """``rows`` hold HTML already escaped; columns in ``left`` are left-aligned."""
    th = "".join(f'<th class="l">{h}</th>' if k in left else f"<th>{h}</th>" for k, h in enumerate(head))
    trs = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if k in left else f"<td>{c}</td>" for k, c in enumerate(r)) + "</tr>"
                  for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    return '<table class="kv"><tbody>' + "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</tbody></table>"


def _copyable(value: str, key: str) -> str:
    """A digest in full, selectable with one click, with a copy button; ``key`` is its unique element id."""
    return f'<code class="id" id="{key}">{esc(value)}</code><button class="copy" type="button" data-copy="{key}">copy</button>'


def _yes(ok: bool | None, yes: str = "yes", no: str = "no") -> str:
    if ok is None:
        return "—"
    return f'<span class="ok">{yes}</span>' if ok else f'<span class="bad">{no}</span>'


def _mark(ok: bool, text: str) -> str:
    """``text`` in green if ``ok``, else in red."""
    return _yes(ok, text, text)


# ---------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------


def _header(view: RunView) -> str:
    m, p = view.manifest["model"], view.manifest["prompts"]
    n = len(view.blocks)
    cert = _mark(view.n_certified == n, f"{view.n_certified}/{n} blocks certified")
    ver = _yes(view.verified, "every certificate is internally consistent (verify --level hashes: digests, schema, and every "
               "number follows from the stored per-token values; not replayed: run blockcert verify for that)",
               "verification FAILED (level hashes)")
    derived = f" · {esc(view.derivation['kind'])} <code>{esc(view.derivation_spec)}</code>" if view.derivation else ""
    return (f"<header><h1>BlockCert report: {esc(m['name'])}</h1>"
            f'<p class="sub">{esc(m["arch"])}, {esc(m["dtype"])}, {esc(m["n_blocks"])} blocks · prompts {esc(p["description"])} '
            f"({esc(p['count'])} prompts) · run <code>{esc(view.label)}</code>{derived}</p><p>{cert} · {ver}</p></header>")


def _summary(view: RunView) -> str:
    m, p, pol = view.manifest["model"], view.manifest["prompts"], view.policy
    tokens = view.blocks[0].predicate["prompts"]["tokens"] if view.blocks else "—"
    failing = [b.index for b in view.blocks if not b.certified]
    rows = [
        ("run directory", f"<code>{esc(view.label)}</code>"),
        ("model", f"{esc(m['name'])} ({esc(m['arch'])}, {esc(m['dtype'])}, L = {esc(m['n_blocks'])}, d = {esc(m['d_model'])})"),
        ("weights sha256", _copyable(m["weights_sha256"], "weights-sha256")),
    ]
    if m.get("source_sha256"):
        rows.append(("source file sha256", _copyable(m["source_sha256"], "source-sha256")))
    rows += [
        ("prompt set", f"{esc(p['description'])}: {esc(p['count'])} prompts, {esc(tokens)} tokens"),
        ("prompt-set sha256", _copyable(p["sha256"], "prompts-sha256")),
        ("policy", f"τ_act = {pol['tau_act']:g}, τ_loss = {pol['tau_loss']:g}, α_act = {pol['alpha_act']:g}, "
                   f"α_loss = {pol['alpha_loss']:g} (certified iff cov_act ≥ α_act and cov_loss ≥ α_loss)"),
        ("certified blocks", _mark(not failing, f"{view.n_certified} of {len(view.blocks)}")
                             + (f"; not certified: {esc(ranges(failing))}" if failing else "")
                             + f" (blocks in this run: {esc(ranges([b.index for b in view.blocks]))})"),
    ]
    if view.derivation:
        d = view.derivation
        rows.append(("derivation", f"{esc(d['kind'])} <code>{esc(view.derivation_spec)}</code> (requested <code>{esc(d['spec'])}</code>); "
                                   "every metric below is about the derived IR, the extraction is kept as base_ir.*; "
                                   "the plugin's notes are in the block table"))
    rows.append(("verification", _verification_summary(view)))
    rows.append(("tokens shown as", esc(view.tokens_source)))
    replay = view.manifest["replay"]
    rows.append(("tool", f"blockcert {esc(view.manifest['tool']['version'])}; replay {esc(replay['backend'])} {esc(replay['dtype'])}, "
                         f"interpreter sha256 <code>{esc(replay['interpreter_sha256'][:16])}…</code>"))
    return _section("summary", _kv(rows))


def _verification_summary(view: RunView) -> str:
    n_ok = sum(b.verification.ok for b in view.blocks)
    parts = [_mark(n_ok == len(view.blocks), f"{n_ok} of {len(view.blocks)} block certificates verify")]
    if view.full is not None and view.full.verification is not None:
        parts.append(f"full-model certificate {_yes(view.full.verification.ok, 'verifies', 'FAILS')}")
    if view.summary_verification is not None:
        parts.append(f"run summary {_yes(view.summary_verification.ok, 'verifies', 'FAILS')}")
    text = "; ".join(parts) + (" — <code>blockcert verify --level hashes</code>: digests, schema, cross-references and the "
                               "exact bound arithmetic; the metrics are not re-derived here (run <code>blockcert verify</code> "
                               "at level replay for that).")
    failures = [(b.certificate, b.verification) for b in view.blocks if not b.verification.ok]
    if view.full is not None and view.full.verification is not None and not view.full.verification.ok:
        failures.append(("full/certificate.json", view.full.verification))
    if view.summary_verification is not None and not view.summary_verification.ok:
        failures.append(("metrics.json", view.summary_verification))
    if failures:
        items = "".join(f"<li><code>{esc(path)}</code>: " + "; ".join(esc(f) for f in v.failed[:5])
                        + (f" (and {len(v.failed) - 5} more)" if len(v.failed) > 5 else "") + "</li>" for path, v in failures)
        text += f'<ul class="bad">{items}</ul>'
    return text


def _blocks(view: RunView) -> str:
    if not view.blocks:
        return _section("blocks", "", "no block certificates")
    pol = view.policy
    labels = [str(b.index) for b in view.blocks]
    met = [b.metrics for b in view.blocks]
    charts = [
        bar_chart(labels, [m["cov_act"] for m in met], title="cov_act (share of tokens with e ≤ τ_act)", width=560, ylim=(0.0, 1.0),
                  threshold=pol["alpha_act"], threshold_label=f"α_act = {pol['alpha_act']:g}", passes=lambda v: v >= pol["alpha_act"],
                  tooltips=[f"block {b.index}: cov_act {m['cov_act']:.4f}" for b, m in zip(view.blocks, met)]),
        bar_chart(labels, [m["cov_loss"] for m in met], title="cov_loss (share of baseline loss moved ≤ τ_loss)", width=560,
                  ylim=(0.0, 1.0),
                  threshold=pol["alpha_loss"], threshold_label=f"α_loss = {pol['alpha_loss']:g}", passes=lambda v: v >= pol["alpha_loss"],
                  tooltips=[f"block {b.index}: cov_loss {m['cov_loss']:.4f}" for b, m in zip(view.blocks, met)]),
        bar_chart(labels, [m["epsilon"] for m in met], title="ε = max e(p,t) (bars) and MAE (dots)", width=560, log=True,
                  threshold=pol["tau_act"], threshold_label=f"τ_act = {pol['tau_act']:g}", passes=lambda v: v <= pol["tau_act"],
                  markers=[m["mae"] for m in met], marker_label="MAE",
                  tooltips=[f"block {b.index}: ε {fmt(m['epsilon'])}, MAE {fmt(m['mae'])}" for b, m in zip(view.blocks, met)]),
        bar_chart(labels, [m["rel_max"] for m in met], title="relative error e/‖x‖: max (bars) and mean (dots); no threshold", width=560,
                  log=True,
                  markers=[m["rel_mean"] for m in met], marker_label="mean",
                  tooltips=[f"block {b.index}: rel max {fmt(m['rel_max'])}, rel mean {fmt(m['rel_mean'])}"
                            for b, m in zip(view.blocks, met)]),
    ]
    derived = any(b.derivation for b in view.blocks)
    head = ["block", "certified", "consistent (hashes)", "ε", "MAE", "rel max", "rel mean", "cov_act", "cov_path", "cov_loss", "best prompt"]
    head += ["derivation"] if derived else []
    head += ["certificate id"]
    rows = []
    for b in view.blocks:
        m = b.metrics
        row = [str(b.index), _yes(b.certified), _yes(b.verification.ok), fmt(m["epsilon"]), fmt(m["mae"]), fmt(m["rel_max"]),
               fmt(m["rel_mean"]), _cov(m["cov_act"], pol["alpha_act"]), f"{m['cov_path']:.4f}", _cov(m["cov_loss"], pol["alpha_loss"]),
               esc(m["best_prompt"])]
        if derived:
            row.append(f"<code>{esc(b.derivation['spec'])}</code><br><span class=\"note\">{_notes(b.derivation)}</span>"
                       if b.derivation else "extraction")
        row.append(f'<a href="#cert-{b.index}"><code>{esc(b.certificate_id[:12])}…</code></a>')
        rows.append(row)
    note = ('<p class="note">Green bars pass the policy, red ones fail it. For ε a red bar means at least one token lies above '
            "τ_act (cov_act &lt; 1), which alone does not fail a block. Hover a bar for its value.</p>")
    return _section("blocks", '<div class="grid2">' + "".join(charts) + "</div>" + note
                    + _table(head, rows, left=(11,) if derived else ()))


def _notes(derivation: dict[str, Any]) -> str:
    """The plugin's notes in short (numbers to 4 digits, without the kind, which is shown already)."""
    def short(v: str) -> str:
        try:
            return f"{float(v):.4g}"
        except ValueError:
            return v

    return "; ".join(f"{esc(k)} {esc(short(v))}" for k, v in sorted(derivation.get("notes", {}).items()) if k != "kind")


def _cov(value: float, alpha: float) -> str:
    return f'<span class="{"" if value >= alpha else "bad"}">{value:.4f}</span>'


def _tokens(view: RunView) -> str:
    if not view.blocks:
        return _section("tokens", "", "no block certificates")
    tau = view.policy["tau_act"]
    tau_loss = view.policy["tau_loss"]
    groups = [(f"p{p.index}", len(p.ids)) for p in view.prompts]
    rows = [[bucket(float(e) / tau if tau > 0 else math.inf) for te in b.errors for e in te.error] for b in view.blocks]
    overview = heat_overview([str(b.index) for b in view.blocks], rows, groups,
                             title="e(p,t)/τ_act for every block (rows) and token (columns, prompts side by side)")
    legend = legend_html() + (
        '<p class="legend"><span class="mk t f e5">outlined</span> e &gt; τ_act (not covered) '
        f'<span class="mk t l e0">underlined</span> its next-token loss moved by more than τ_loss = {tau_loss:g} '
        '<span class="mk t p e0">line on top</span> attention mask row or head gates differ from the native block '
        '<span class="mk t s e0">italic</span> special token</p>')
    parts = [legend, f"<h3>e(p,t)/τ_act of every block (rows) at every token (columns; prompts side by side)</h3>"
             f'<div class="scroll">{overview}</div>',
             f'<p class="note">Tokens shown as {esc(view.tokens_source)}. Per-token text below: {esc(view.token_blocks_reason)} '
             "(<code>--token-blocks</code> chooses others). Hover a token for its numbers.</p>"]
    texts = _table(["prompt", "tokens", "text"], [[str(p.index), str(len(p.ids)), f'<span class="mono">{esc(p.text)}</span>']
                                                   for p in view.prompts], left=(2,))
    described = esc(view.manifest["prompts"]["description"])
    parts.append(f"<details><summary>the {len(view.prompts)} prompts ({described})</summary>{texts}</details>")
    for index in view.token_blocks:
        parts.append(_block_tokens(view, view.block(index)))
    return _section("tokens", "\n".join(parts))


def _block_tokens(view: RunView, b: BlockView) -> str:
    m = b.metrics
    status = _yes(b.certified, "certified", "not certified")
    head = (f'<h3 id="tokens-{b.index}">Block {b.index}: {status}, cov_act {m["cov_act"]:.4f}, cov_loss {m["cov_loss"]:.4f}, '
            f"ε {fmt(m['epsilon'])}</h3>")
    per_act, per_mae, per_loss = m.get("per_prompt_cov_act"), m.get("per_prompt_mae"), m.get("per_prompt_cov_loss")
    out = [head]
    for p, te in zip(view.prompts, b.errors):
        above = int(np.sum(te.error > view.policy["tau_act"]))
        stats = f"{len(p.ids)} tokens, {above} above τ_act"
        if per_act is not None:
            stats += f", cov_act {per_act[p.index]:.3f}, MAE {fmt(per_mae[p.index])}, cov_loss {per_loss[p.index]:.3f}"
        out.append(f'<div class="prompt"><div class="h">prompt {p.index} · {esc(stats)}</div>'
                   f'<div class="toks">{_token_spans(view, b.index, p, te)}</div></div>')
    return "\n".join(out)


def _token_spans(view: RunView, block: int, p: PromptView, te: TokenErrors) -> str:
    tau, tau_loss = view.policy["tau_act"], view.policy["tau_loss"]
    spans = []
    n = len(p.ids)
    for t in range(n):
        e = float(te.error[t])
        ratio = e / tau if tau > 0 else math.inf
        cls = [f"t e{bucket(ratio)}"]
        if not e <= tau:
            cls.append("f")
        dl = float(te.loss_delta[t]) if t < n - 1 else None
        if dl is not None and not dl <= tau_loss:
            cls.append("l")
        if not bool(te.path_match[t]):
            cls.append("p")
        if p.special[t]:
            cls.append("s")
        tip = (f"block {block}, prompt {p.index}, token {t} (id {p.ids[t]})\ne = {e:.4g} ({ratio:.3g} τ_act)\n"
               f"e/‖x‖ = {float(te.rel_error[t]):.3g}\npath {'matches' if te.path_match[t] else 'DIFFERS'}\n"
               + (f"|Δ loss| of the next token = {dl:.3g} nats" if dl is not None else "last token: no next-token loss"))
        piece = p.pieces[t]
        text = esc(piece).replace("\n", "↵\n") if piece else "·"
        spans.append(f'<span class="{" ".join(cls)}" title="{esc(tip)}">{text}</span>')
    return "".join(spans)


def _stitched(view: RunView) -> str:
    if view.full is None:
        return _section("stitched", "", "not stitched: run <code>blockcert stitch</code> on the run directory (or "
                                        "<code>blockcert run --full</code>) for the per-layer error, perplexities and the probe")
    ev = view.full.evaluation
    m = ev["metrics"]
    layers = tuple(float(k) for k in range(1, len(m["layer_mae"]) + 1))
    chart = line_chart([Series("mean ‖x̂ − x‖ over tokens (MAE)", layers, tuple(m["layer_mae"]), NEUTRAL),
                        Series("max ‖x̂ − x‖", layers, tuple(m["layer_max"]), BAD, dashed=True)],
                       title="stitched vs baseline residual stream after each block (log scale)",
                       xlabel="layer ℓ (output of block ℓ−1)", ylog=True, xint=True)
    ppl = _table(["", "perplexity"], [["baseline", f"{m['ppl_baseline']:.6f}"], ["stitched", f"{m['ppl_stitched']:.6f}"],
                                      ["Δ (stitched − baseline)", f"{m['delta_ppl']:.3e}"],
                                      ["relative |Δ|", f"{m['rel_delta_ppl']:.3e}"]])
    probe = _table(["", "agreement"], [
        ["stitched = baseline", f"{m['probe_stitched_vs_baseline']:.3f}"],
        ["baseline = human label", f"{m['probe_baseline_vs_human']:.3f}"],
        ["stitched = human label", f"{m['probe_stitched_vs_human']:.3f}"]])
    items = _table(["prompt", "label", "baseline", "stitched"],
                   [[esc(i["prompt"]), f"<code>{esc(i['label'])}</code>", f"<code>{esc(i['baseline'])}</code>",
                     f'<code class="{"" if i["stitched"] == i["baseline"] else "bad"}">{esc(i["stitched"])}</code>']
                    for i in ev.get("probe", [])], left=(0, 1, 2, 3))
    blocks = ev["stitched_blocks"]
    info = (f"<p>{len(blocks)} blocks replaced by their IR ({esc(ranges(blocks))}); mean layer MAE {fmt(m['mean_layer_mae'])}, "
            f"worst layer MAE {fmt(m['worst_layer_mae'])}, max residual error {fmt(m['max_residual_error'])}.</p>")
    cert = ""
    if view.full.certificate_id:
        ok = view.full.verification.ok if view.full.verification else None
        cert = (f"<p>full-model certificate <code>full/certificate.json</code> ({_yes(ok, 'verifies', 'FAILS')}): "
                f"{_copyable(view.full.certificate_id, 'full-id-stitched')}</p>")
    inner = (info + chart + f'<div class="grid2"><div><h3>Perplexity</h3>{ppl}</div>'
             f'<div><h3>Semantic probe ({esc(m["probe_prompts"])} prompts)</h3>{probe}</div></div>'
             f"<details><summary>the {len(ev.get('probe', []))} probe prompts</summary>{items}</details>{cert}")
    return _section("stitched", inner)


def _bounds(view: RunView) -> str:
    with_lip = [b for b in view.blocks if b.lipschitz]
    if not with_lip:
        return _section("bounds", "", "no Lipschitz bounds in this run: <code>blockcert run --bounds</code> computes them")
    parts = []
    report = view.bounds
    if report is not None:
        sound = report.sound
        parts.append(_global_bound(report))
        by_index = {b.index: k for k, b in enumerate(report.blocks)}
    else:
        parts.append(f'<p class="bad">No global bound (Theorem 1): {esc(view.bounds_note or "")}</p>')
        sound, by_index = None, {}
    rows = []
    for b in with_lip:
        lip = b.lipschitz
        row = [str(b.index), fmt(b.metrics["epsilon"]), fmt(lip["epsilon_seq"]), fmt(lip["analytic_upper_bound"]),
               fmt(lip["hybrid_upper_bound"]), fmt(lip["hybrid_input_radius"]), fmt(lip["empirical_lower_bound"])]
        if sound is not None:
            from blockcert.bounds.compose import sci_up

            k = by_index[b.index]
            observed = report.observed_layer_max[k] if report.observed_layer_max else None
            row += [esc(sound.lips[k]), esc(sci_up(sound.per_layer[k])), fmt(observed)]
        rows.append(row)
    head = ["block", "ε_token", "ε_seq", "L analytic", "L hybrid", "hybrid radius", "Jacobian lower"]
    if sound is not None:
        head += ["L used", "bound δ after block", "observed max"]
    parts.append("<h3>Per block (certified upper bounds on the IR block, sequence norm)</h3>" + _table(head, rows))
    parts.append('<p class="note">L analytic / L hybrid are certified only on the regions recorded in each block\'s bounds.json; '
                 "the Jacobian lower bound is attained at a traced input, not a certificate. See docs/bounds.md.</p>")
    return _section("bounds", "\n".join(parts))


def _global_bound(report: Any) -> str:
    from blockcert.bounds.compose import log10, sci_up

    rows = [[esc(v.name), esc(sci_up(v.bound.exact)), _yes(v.sound, "sound", "not a bound"), esc(v.label)] for v in report.variants]
    rows.append(["Σ ε_i", esc(sci_up(report.sum_eps.sum_eps_exact)), _yes(report.sum_eps.lips_le_one, "sound", "not a bound"),
                 "the bound if every L_i ≤ 1" + ("" if report.sum_eps.lips_le_one else "; here the L_i are &gt; 1")])
    out = [f"<h3>Theorem 1: global bound on the final residual deviation ({len(report.stitched_blocks)} of {report.n_blocks} "
           "blocks stitched)</h3>",
           _table(["variant", "bound", "", "what"], rows, left=(0, 3))]
    if report.observed_max is not None:
        ratio = report.to_dict()["observed"]["bound_over_observed_log10"]
        holds = _yes(report.holds, "the sound bound holds at every layer", "a sound bound is BELOW the observed deviation")
        out.append(f"<p>Observed max residual error of the stitched replay: {fmt(report.observed_max)}; the sound (mixed) bound is "
                   f"10^{ratio:.1f} times larger. {holds}.</p>" if ratio is not None else f"<p>{holds}</p>")
    layers = tuple(float(k) for k in range(1, len(report.sound.per_layer) + 1))
    series = [Series("log10 bound δ after block (mixed, sound)", layers, tuple(log10(d) for d in report.sound.per_layer), BAD)]
    if report.observed_layer_max:
        series.append(Series("log10 observed max", layers,
                             tuple(math.log10(v) if v > 0 else None for v in report.observed_layer_max), GOOD))
    out.append(line_chart(series, title="Theorem 1 after each block vs the observed deviation (powers of ten)", xlabel="layer",
                          ylabels=lambda v: f"1e{v:g}", xint=True, yint=True))
    hyps = "".join(f'<li><span class="{"ok" if h.status in ("certified", "measured", "checked") else "bad"}">{esc(h.status)}</span> '
                   f"<b>{esc(h.name)}</b>: {esc(h.detail)}</li>" for h in report.hypotheses)
    out.append(f"<details><summary>the hypotheses of Theorem 1 and their status</summary><ul>{hyps}</ul></details>")
    return "\n".join(out)


def _derivation(view: RunView) -> str:
    parts = []
    derived = [b for b in view.blocks if b.derivation]
    if derived:
        rows = []
        for b in derived:
            d = b.derivation
            notes = "<br>".join(f"{esc(k)} = {esc(v)}" for k, v in sorted(d.get("notes", {}).items()))
            rows.append([str(b.index), esc(d["kind"]), f"<code>{esc(d['spec'])}</code>", notes, f"{b.metrics['cov_act']:.4f}",
                         fmt(b.metrics["mae"]), _yes(b.certified), f"<code>{esc(d['base_ir_tensors_sha256'][:16])}…</code>"])
        parts.append(f"<h3>This run: {esc(derived[0].derivation['kind'])} <code>{esc(view.derivation_spec)}</code></h3>"
                     + _table(["block", "kind", "spec", "notes", "cov_act", "MAE", "certified", "base IR tensors"], rows, left=(1, 2, 3)))
    if view.compare:
        rows = [[esc(r.label), esc(r.derivation), f"{r.certified}/{len(r.blocks)}", f"{r.mean_cov_act:.4f}", f"{r.mean_cov_loss:.4f}",
                 fmt(r.mean_mae), fmt(r.mean_epsilon), "—" if r.mae_ratio is None else f"{r.mae_ratio:.3g}×", _yes(r.verified)]
                for r in view.compare]
        blocks = view.compare[0].blocks
        parts.append(f"<h3>Comparison over blocks {esc(ranges(blocks))} (the blocks every run has)</h3>"
                     + _table(["run", "blocks certified as", "certified", "mean cov_act", "mean cov_loss", "mean MAE", "mean ε",
                               "MAE ratio vs this run", "verifies"], rows, left=(0, 1)))
        head = ["block"] + [f"{esc(r.label)}<br>cov_act / MAE" for r in view.compare]
        per = [[str(i)] + [f"{_cov(r.per_block[i][0], view.policy['alpha_act'])} / {fmt(r.per_block[i][1])}" for r in view.compare]
               for i in blocks]
        parts.append("<details open><summary>per block</summary>" + _table(head, per) + "</details>")
    if not parts:
        return _section("derivation", "", "this run certifies the plain extraction; <code>blockcert run --surrogate</code> / "
                                          "<code>--ablate</code> make derived runs, and <code>blockcert report --compare DIR</code> "
                                          "puts other runs of the same model and prompts beside this one")
    return _section("derivation", "\n".join(parts))


def _edit_sweep(view: RunView) -> str:
    sweep = view.edit_sweep
    if sweep is None:
        return _section("edit-sweep", "", "no edit sweep: pass <code>--edit-sweep FILE</code> (the JSON that "
                                          "<code>blockcert edit sweep</code> writes)")
    meta = "".join(f"; {esc(k)} = <code>{esc(v)}</code>" for k, v in sweep.meta)
    parts = [f"<p>From <code>{esc(sweep.source)}</code>{meta}.</p>"]
    for block in sorted({r.block for r in sweep.rows}):
        rows = [r for r in sweep.rows if r.block == block]
        xs = tuple(r.alpha for r in rows)
        parts.append(line_chart([Series("answer accuracy", xs, tuple(r.answer_accuracy for r in rows), NEUTRAL),
                                 Series("refuse accuracy", xs, tuple(r.refuse_accuracy for r in rows), GOOD, dashed=True)],
                                title=f"block {block}: accuracy against the edit strength α", xlabel="α", ylim=(0.0, 1.0),
                                height=200))
    parts.append(_table(["block", "α", "answer accuracy", "refuse accuracy"],
                        [[str(r.block), f"{r.alpha:g}", f"{r.answer_accuracy:.3f}", f"{r.refuse_accuracy:.3f}"] for r in sweep.rows]))
    return _section("edit-sweep", "\n".join(parts))


def _direction_sweep(view: RunView) -> str:
    ds = view.direction_sweep
    if ds is None:
        return _section("direction-sweep", "", "no direction sweep: pass <code>--direction-sweep DIR</code> (the <code>--out</code> of "
                                               "<code>blockcert edit direction-sweep</code>)")
    (a, na), (f, nf) = ds.base
    where = "in-sample" if ds.direction_corpus == ds.corpus else f"directions from <code>{esc(ds.direction_corpus)}</code>"
    intro = (f"<p>From <code>{esc(ds.source)}</code>: {esc(ds.model)} ({esc(ds.dtype)}) on <code>{esc(ds.corpus)}</code> ({where}); "
             f"unedited: answer {a}/{na}, refuse {f}/{nf}. Each row is an edit certificate (<code>edits/</code>), verified here at level "
             "hashes; changes are against the unedited completions of the same prompts (exact McNemar p).</p>")
    charts = []
    for label, pick in (("refuse accuracy", lambda r: r.refuse[0] / max(r.refuse[1], 1)), ("answer accuracy", lambda r: r.answer[0] / max(r.answer[1], 1))):
        series = []
        for n, key in enumerate(sorted({(r.edit, r.scale) for r in ds.rows}, key=lambda k: (k[0], k[1] or 0.0))):
            rows = sorted((r for r in ds.rows if (r.edit, r.scale) == key), key=lambda r: r.layer)
            name = "ablate (all layers)" if key[0] == "ablate" else f"add {key[1]:g}×"
            series.append(Series(name, tuple(float(r.layer) for r in rows), tuple(pick(r) for r in rows), (BAD, NEUTRAL, GOOD)[n % 3],
                                 dashed=n >= 3))
        charts.append(line_chart(series, title=f"{label} against the layer of the direction", xlabel="layer ℓ", ylim=(0.0, 1.0),
                                 xint=True, height=200))
    rows = [[str(r.layer), "ablate, all layers" if r.edit == "ablate" else f"add {r.scale:g}× (α = {r.alpha:g})",
             f"{r.answer[0]}/{r.answer[1]} (+{r.answer_change[0]}/−{r.answer_change[1]}, p {r.answer_change[2]:.2g})",
             f"{r.refuse[0]}/{r.refuse[1]} (+{r.refuse_change[0]}/−{r.refuse_change[1]}, p {r.refuse_change[2]:.2g})",
             f"{r.benign_unchanged}/{r.answer[1]}", f"{r.kl_mean:.3g}", f"{r.ppl[0]:.4g} → {r.ppl[1]:.4g}",
             "yes" if r.verifies else f"<b>no</b>: {esc(r.problem)}"] for r in ds.rows]
    table = _table(["layer", "edit", "answer", "refuse", "benign unchanged", "KL mean (nats)", "stress PPL", "certificate verifies"], rows)
    return _section("direction-sweep", intro + "\n".join(charts) + table)


def _minimize(view: RunView) -> str:
    mz = view.minimize
    if mz is None:
        return _section("minimize", "", "no minimal mechanisms: pass <code>--minimize DIR</code> (the <code>--out</code> of "
                                        "<code>blockcert minimize</code>)")
    xs = tuple(float(r.block) for r in mz.rows)
    frac = lambda pair: pair[0] / pair[1] if pair[1] else 1.0  # noqa: E731
    chart = line_chart([Series("heads kept", xs, tuple(frac(r.heads) for r in mz.rows), NEUTRAL),
                        Series("neurons kept", xs, tuple(frac(r.neurons) for r in mz.rows), GOOD, dashed=True),
                        Series("rank kept", xs, tuple(frac(r.rank) for r in mz.rows), BAD)],
                       title="kept fraction of each block's smallest certified surrogate", xlabel="block", ylim=(0.0, 1.0), xint=True,
                       height=220)
    rows = [[str(r.block), f"{r.heads[0]}/{r.heads[1]}", f"{r.neurons[0]}/{r.neurons[1]}", f"{r.rank[0]}/{r.rank[1]}",
             f"{r.cov_act:.3f}", f"{r.cov_loss:.3f}", "yes" if r.certified else "no", str(r.candidates), f"{r.seconds:.0f}"] for r in mz.rows]
    table = _table(["block", "heads kept", "neurons kept", "rank kept (sum)", "cov_act", "cov_loss", "certified", "candidates", "wall s"], rows)
    intro = (f"<p>From <code>{esc(mz.source)}</code>: {esc(mz.model)} ({esc(mz.dtype)}), budget <code>{esc(mz.budget)}</code>. "
             "Each row is certified by its own run (<code>runs/block_&lt;idx&gt;</code>, verified with <code>blockcert verify</code>).</p>")
    return _section("minimize", intro + chart + table)


def _subject_rows(subjects: Sequence[tuple[str, str, str | None]]) -> str:
    """One table row per artifact: its path, SHA-256 and (for a .safetensors file) its tensor digest."""
    def row(name: str, sha: str, tensors: str | None) -> str:
        extra = f'<br><span class="note">tensors</span> <code class="id">{esc(tensors)}</code>' if tensors else ""
        return f'<tr><td class="l"><code>{esc(name)}</code></td><td class="l"><code class="id">{esc(sha)}</code>{extra}</td></tr>'

    return "".join(row(*s) for s in subjects)


def _ids(view: RunView) -> str:
    rows, lines = [], []
    for b in view.blocks:
        rows.append(f'<tr id="cert-{b.index}"><td>{b.index}</td><td class="l"><code>{esc(b.certificate)}</code></td>'
                    f'<td class="l">{_copyable(b.certificate_id, f"id-{b.index}")}<details><summary>{len(b.subjects)} block '
                    f"artifacts</summary><table>{_subject_rows(b.subjects)}</table></details></td></tr>")
        lines.append(f"{b.certificate_id}  {b.certificate}")
        lines += [f"{sha}  {name}" for name, sha, _ in b.subjects]
    table = ('<div class="scroll"><table><thead><tr><th>block</th><th class="l">certificate</th><th class="l">id = sha256 of its bytes</th>'
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    lines += [f"{sha}  {name}" for name, sha, _ in view.shared_subjects]
    full = ""
    if view.full is not None and view.full.certificate_id:
        full = f"<p>full-model certificate <code>full/certificate.json</code>: {_copyable(view.full.certificate_id, 'full-id')}</p>"
        lines.append(f"{view.full.certificate_id}  full/certificate.json")
        lines += [f"{sha}  {name}" for name, sha, _ in view.full.subjects if name.startswith("full/")]
    sums = "\n".join(dict.fromkeys(lines))
    inner = (table + full
             + f"<details><summary>artifacts shared by every block certificate ({len(view.shared_subjects)})</summary>"
             + f"<table>{_subject_rows(view.shared_subjects)}</table></details>"
             + '<h3>Every digest, in <code>sha256sum</code> format <button class="copy" type="button" data-copy="sums">copy</button></h3>'
             + '<p class="note">From inside the run directory, <code>sha256sum -c</code> on these lines checks every file.</p>'
             + f'<pre class="sums" id="sums">{esc(sums)}</pre>')
    return _section("ids", inner)


__all__: Sequence[str] = ["render_html", "SECTIONS"]
