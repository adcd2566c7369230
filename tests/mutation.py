"""``make mutants``: deliberate bugs, each applied to a temporary copy of the repository, then the fast tests
that guard that feature run against the copy; a mutant the tests do not fail on *survives*.

A small runner over a documented list rather than a mutation tool (mutmut, cosmic-ray): a random operator
swap mostly yields equivalent or trivially-crashing mutants, while the bugs worth guarding against are
specific (a block never swapped in, a verifier check that always passes, a bound 1000x looser, an edit
measured without the edit). Each entry below says which bug it is and which tests must catch it.

    .venv/bin/python tests/mutation.py            # all mutants; exit 1 if any survives
    .venv/bin/python tests/mutation.py M04 M12    # some of them
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

METRICS = ["tests/test_metrics.py", "tests/test_independent.py", "tests/test_run.py"]
STITCH = ["tests/test_independent.py", "tests/test_stitch.py"]
BOUNDS = ["tests/test_bounds_tightness.py", "tests/test_bounds.py"]
EDITS = ["tests/test_independent.py", "tests/test_forgery.py", "tests/test_edits.py"]
VERIFY = ["tests/test_forgery.py", "tests/test_tamper.py", "tests/test_golden.py"]
FULL = ["tests/test_forgery.py", "tests/test_observe.py", "tests/test_tamper.py"]
REFERENCE_BOUNDS = ["tests/test_reference_bounds.py"]
NUMPY_FULL = ["tests/test_reference_model.py", "tests/test_forgery.py", "tests/test_import_graph.py"]
POLICIES = ["tests/test_policies.py"]
ARCHS = ["tests/test_equivalence.py", "tests/test_ir.py"]

# (id, what the bug is, file, the exact text, its replacement, the tests that must fail)
MINIMIZE = ["tests/test_minimize.py"]
DIRECTIONS = ["tests/test_directions.py"]
MUTANTS: list[tuple[str, str, str, str, str, list[str]]] = [
    ("M01", "loss coverage: the block is never swapped in (stitched losses = baseline losses)", "blockcert/pipeline/certify.py",
     "    index = ex.index\n    d = root / block_dir(index)\n",
     "    index = ex.index\n    stitched = [np.asarray(t.loss) for t in traces]\n    d = root / block_dir(index)\n", METRICS),
    ("M02", "stitch: the stitched perplexity is computed from the baseline losses", "blockcert/pipeline/stitch.py",
     "nll_stitched.append(nll[b].astype(np.float64))", "nll_stitched.append(t.loss.astype(np.float64))", STITCH),
    ("M03", "stitch: the probe compares the baseline with itself", "blockcert/pipeline/stitch.py",
     "probe_ids, finals[-2], finals[-1])", "probe_ids, finals[-1], finals[-1])", STITCH),
    ("M04", "bounds: the attention bound is 1000x looser (still sound)", "blockcert/bounds/layers.py",
     "    return LipschitzBound(value, region, parts)", "    return LipschitzBound(value * 1000, region, parts)", BOUNDS),
    ("M05", "edits: the sweep generates its 'edited' completions without the edit", "blockcert/edit/certify.py",
     "                    with handle:\n", "                    if True:\n", EDITS),
    ("M06", "edits: epsilon_edit doubled", "blockcert/edit/certify.py",
     "    e, f = max(eps), max(fin)", "    e, f = 2 * max(eps), max(fin)", EDITS),
    ("M07", "edits: the final deviation measured one layer early", "blockcert/edit/certify.py",
     "(edited[-1][b, :n] - base[-1][b, :n])", "(edited[-2][b, :n] - base[-2][b, :n])", EDITS),
    ("M08", "metric epsilon is the mean error, not the max", "blockcert/metrics.py",
     "    return float(np.max(errors))", "    return float(np.mean(errors))", METRICS + VERIFY),
    ("M09", "metric MAE is the median", "blockcert/metrics.py",
     "    return float(np.mean(errors))\n\n\ndef cov_act", "    return float(np.median(errors))\n\n\ndef cov_act", METRICS + VERIFY),
    ("M10", "metric cov_act uses 10 tau_act", "blockcert/metrics.py",
     "return float(np.mean(errors <= tau_act))", "return float(np.mean(errors <= 10 * tau_act))", METRICS + VERIFY),
    ("M11", "metric cov_path ignores the mask when the gates match", "blockcert/metrics.py",
     "    return rows & gates", "    return rows | gates", METRICS + FULL),
    ("M12", "metric cov_loss unweighted by the baseline loss", "blockcert/metrics.py",
     "return float(np.sum(base * (delta <= tau_loss)) / total)", "return float(np.mean(delta <= tau_loss))", METRICS + VERIFY),
    ("M13", "verdict: certified when either coverage passes", "blockcert/metrics.py",
     "metrics_cov_act >= policy.alpha_act and metrics_cov_loss", "metrics_cov_act >= policy.alpha_act or metrics_cov_loss", METRICS + VERIFY),
    ("M14", "trace: the baseline loss predicts the current token, not the next", "blockcert/pipeline/trace.py",
     "    targets = input_ids[:, 1:][sel]", "    targets = input_ids[:, :-1][sel]", METRICS),
    ("M15", "verify: a stored per-token error is accepted whatever the replay gives", "blockcert/verifier/metrics.py",
     "mine) > band)", "mine) > band * 1e6)", VERIFY),
    ("M16", "verify: the claimed verdict is never checked against the claimed metrics", "blockcert/verifier/metrics.py",
     'c.record("verdict consistent with its metrics", consistent,', 'c.record("verdict consistent with its metrics", True,', VERIFY),
    ("M17", "verify: claimed metrics are never compared with the stored per-token values", "blockcert/verifier/metrics.py",
     "        ok = claimed[key] == value if isinstance(value, int) else abs(claimed[key] - value) <= SUM_RTOL * max(1.0, abs(value))",
     "        ok = True", VERIFY),
    # Not listed: "claimed cov_act accepted outside the interval the replay allows". It is an equivalent mutant:
    # a claim must equal what the stored errors give (every level) and each stored error must lie within its
    # band of the replay, which already puts the claim inside that interval; the check stays as a report.
    ("M18", "verify: the stored path matches are not compared with the replay's decisions", "blockcert/verifier/blocks.py",
     'same = np.array_equal(np.asarray(stored[f"{key}.path_match"], bool), path)', "same = True", VERIFY),
    ("M19", "verify --level full: the stored residuals are compared with a 1e9-times wider band", "blockcert/verifier/metrics.py",
     "off = np.flatnonzero(gap > band)", "off = np.flatnonzero(gap > band * 1e9)", FULL),
    ("M20", "verify --level full: token ids are not compared with the tokenizer's", "blockcert/verifier/metrics.py",
     "if ids.dtype != np.int64 or ids.shape != mine.input_ids.shape or not np.array_equal(ids, mine.input_ids):", "if False:", FULL),
    ("M21", "verify: NaN and infinity accepted in tensor artifacts", "blockcert/verifier/subjects.py",
     'memo["nonfinite"] = {k: n for k, n in bad.items() if n}', 'memo["nonfinite"] = {}', VERIFY),
    ("M22", "verify: a certificate may loosen the verifier's policy", "blockcert/verifier/blocks.py",
     "    looser = [k for k in POLICY_FIELDS if", "    looser = [] and [k for k in POLICY_FIELDS if", VERIFY),
    ("M23", "verify: the run summary is never compared with the certificates", "blockcert/verifier/blocks.py",
     'c.record(f"summary {key}", summary.get(key) == expected.get(key),', 'c.record(f"summary {key}", True,', VERIFY),
    ("M24", "verify: a surrogate is not re-derived from its base IR", "blockcert/verifier/blocks.py",
     'c.record("re-derived surrogate = certified IR", same and gap <= DERIVATION_RTOL,', 'c.record("re-derived surrogate = certified IR", True,',
     ["tests/test_derive.py"]),
    ("M25", "verify edit: the amplification is not recomputed from its parts", "blockcert/verifier/edit.py",
     'c.record("amplification = final deviation / epsilon_edit", metrics["amplification"] == amp,',
     'c.record("amplification = final deviation / epsilon_edit", True,', EDITS),
    ("M26", "verify edit: regenerated edited completions are not compared", "blockcert/verifier/torch_reference.py",
     "c.record(f\"regenerated {r['id']} edited\", e == r[\"edited\"],", "c.record(f\"regenerated {r['id']} edited\", True,", EDITS),
    ("M27", "observe: every head recorded active, whatever the block did", "blockcert/model/observe.py",
     "rows = (output != 0).any(dim=-1) if output.dim() == 4 else", "rows = (output == output).any(dim=-1) if output.dim() == 4 else",
     ["tests/test_observe.py"]),
    ("M28", "observe: the causal formula is recorded instead of what the attention received", "blockcert/model/observe.py",
     "allowed = _allowed(query, key, attention_mask, kwargs, module, weights)", "allowed = _allowed(query, key, None, {}, module, None)",
     ["tests/test_observe.py"]),
    ("M29", "bounds: attention_bound's result 1000x looser (caught by the independent reference's ratio)", "blockcert/bounds/layers.py",
     "    value = fup(K_z * F(norm1.value)) if math.isfinite(norm1.value) else (0.0 if K_z == 0 else math.inf)",
     "    value = 1000 * fup(K_z * F(norm1.value)) if math.isfinite(norm1.value) else (0.0 if K_z == 0 else math.inf)",
     REFERENCE_BOUNDS),
    ("M30", "bounds: the analytic MLP bound halved (unsound; caught by the independent reference)", "blockcert/bounds/mlp.py",
     "    value = fup(F(K) * F(n2.value)) if math.isfinite(n2.value) and math.isfinite(K) else math.inf",
     "    value = 0.5 * fup(F(K) * F(n2.value)) if math.isfinite(n2.value) and math.isfinite(K) else math.inf",
     REFERENCE_BOUNDS),
    ("M31", "numpy reference: rotary embedding turned the wrong way", "blockcert/verifier/reference/model.py",
     "np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)", "np.concatenate([a * cos + b * sin, b * cos - a * sin], axis=-1)",
     NUMPY_FULL),
    ("M32", "numpy reference: a stored stitched loss accepted within a million times its band", "blockcert/verifier/reference/full.py",
     "off = np.flatnonzero(np.abs(new - old) > band)", "off = np.flatnonzero(np.abs(new - old) > band * 1e6)", NUMPY_FULL),
    ("M33", "numpy reference: any claimed probe answer accepted", "blockcert/verifier/reference/full.py",
     "claimed[side] in answers, claimed[side]", "True, claimed[side]", NUMPY_FULL),
    ("M34", "numpy reference: the edit's α never applied when re-measuring deviations", "blockcert/verifier/reference/full.py",
     "local = model.block(block, res[block], alpha)[0]", "local = model.block(block, res[block])[0]", NUMPY_FULL),
    ("M35", "noise-floor: the producer's threshold ignores k (one floor, not k floors)", "blockcert/metrics.py",
     "        return policy.k * np.asarray(floor, np.float64)\n    return np.full(norms.shape",
     "        return np.asarray(floor, np.float64)\n    return np.full(norms.shape", POLICIES),
    ("M36", "noise-floor: the verifier judges the verdict at level full on the stored floors, not the model's",
     "blockcert/verifier/blocks.py",
     "        r.floor_act, r.floor_loss = full.floors(ell, r.floor_act, r.floor_loss, c)",
     "        full.floors(ell, r.floor_act, r.floor_loss, c)", POLICIES),
    ("M37", "noise-floor: the re-measured activation floors are never compared with the stored ones",
     "blockcert/verifier/torch_reference.py", "            off = np.flatnonzero(np.abs(np.asarray(theirs, np.float64) - mine) > band)",
     "            off = np.flatnonzero(np.abs(np.asarray(theirs, np.float64) - mine) > 1e300)", POLICIES),
    ("M38", "policy: a certificate made under another rule is judged by the verifier's rule", "blockcert/verifier/blocks.py",
     'c.require("policy name = the verifier\'s", name == policy.name,', 'c.require("policy name = the verifier\'s", True,', POLICIES),
    ("M39", "the loss floor forgets the suffix's own noise", "blockcert/pipeline/floor.py",
     "np.abs(np.asarray(q, np.float64) - b64))", "0 * np.abs(np.asarray(q, np.float64) - b64))", POLICIES),
    ("M40", "the interpreter drops the post-MLP norm (Gemma's sandwich, OLMo2)", "blockcert/interpreter.py",
     "y = h + norm(xp, mlp(xp, norm(xp, h, ir.norm2), ir.mlp), ir.post_mlp_norm)", "y = h + mlp(xp, norm(xp, h, ir.norm2), ir.mlp)", ARCHS),
    ("M41", "QK-norm over the whole projection is applied per head", "blockcert/interpreter.py",
     "    if n.weight.shape[0] == hd:\n", "    if True:\n", ARCHS),
    ("M42", "a soft-capped block's attention bound shifts the keys by b_k", "blockcert/bounds/layers.py",
     "if a.rope is not None or a.softcap is not None else nk * R_F", "if a.rope is not None else nk * R_F", BOUNDS),
    ("M43", "the neuron keep-vector is parsed but not applied (minimize)", "plugins/surrogates/transforms.py",
     "        new[key] = Linear(weight, bias)\n", "        new[key] = lin\n", MINIMIZE),
    ("M44", "the verifier does not tie the search log to the spec's digest", "blockcert/verifier/minimize.py",
     'c.require("search log SHA-256 = the spec\'s log", digest == params["log"]',
     'c.require("search log SHA-256 = the spec\'s log", True', MINIMIZE),
    ("M45", "the verifier accepts any recomputed direction (provenance unchecked at full)", "blockcert/verifier/torch_reference.py",
     'c.record("direction recomputed from its corpus", same or cos >= DIRECTION_COSINE,',
     'c.record("direction recomputed from its corpus", True,', DIRECTIONS),
    ("M46", "the weights form orthogonalises the attention output but forgets the MLP's", "plugins/edits/directions.py",
     "            for owner, names in ((attn, ATTN_OUT), (mlp, MLP_OUT)):",
     "            for owner, names in ((attn, ATTN_OUT),):", DIRECTIONS),
    ("M47", "the locality KL is not re-measured at replay", "blockcert/verifier/torch_reference.py",
     "    if metrics.get(\"locality\") is not None:\n        _remeasure_locality(", "    if False:\n        _remeasure_locality(", DIRECTIONS),
    ("M48", "the numpy reference forgets the embedding's projection under direction-ablate:layers=all", "blockcert/verifier/reference/full.py",
     "embedding=r if everywhere else None)", "embedding=None)", DIRECTIONS),
    ("M49", "a resumed direction sweep reuses whatever complete certificate it finds under a configuration's name",
     "blockcert/edit/dirsweep.py", 'return (m["edit"]["spec"] == spec and ', "return (", ["tests/test_dirsweep.py"]),
    ("M50", "verify accepts a direction sweep's results.json whatever its rows say", "blockcert/verifier/sweeps.py",
     'c.record(f"{name}: results.json row = its certificate", not wrong,', 'c.record(f"{name}: results.json row = its certificate", True,',
     ["tests/test_dirsweep.py"]),
    ("M51", "verify takes a direction sweep's McNemar p-values as stated", "blockcert/verifier/sweeps.py",
     '_stats_agree([change["p_value"]], [p])', "True", ["tests/test_dirsweep.py"]),
]


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _plugin_shims(copy: Path) -> Path:
    """The built-in plugins are installed as blockcert_<name> -> plugins/<name> of the checkout (pyproject's package-dir):
    a directory of links to the copy's plugins, put first on PYTHONPATH, makes the tests import the mutated copy."""
    import tomllib

    shims = copy / ".mutant-packages"
    shims.mkdir()
    mapping = tomllib.loads((copy / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    for name, rel in mapping.items():
        (shims / name).symlink_to(copy / rel, target_is_directory=True)
    return shims


def run(selected: list[str]) -> int:
    chosen = [m for m in MUTANTS if not selected or m[0] in selected]
    survivors = []
    with tempfile.TemporaryDirectory(prefix="blockcert-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        env = {**os.environ, "HYPOTHESIS_PROFILE": "fast", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join([str(_plugin_shims(copy)), str(copy), os.environ.get("PYTHONPATH", "")])}
        for ident, what, rel, old, new, tests in chosen:
            path = copy / rel
            original = path.read_text(encoding="utf-8")
            if original.count(old) != 1:
                print(f"{ident} INVALID  {rel}: the text to mutate occurs {original.count(old)} times")
                survivors.append(ident)
                continue
            path.write_text(original.replace(old, new), encoding="utf-8")
            start = time.perf_counter()
            try:
                proc = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *dict.fromkeys(tests)], cwd=copy,
                                      capture_output=True, text=True, env=env, timeout=1800)
            finally:
                path.write_text(original, encoding="utf-8")
            killed = proc.returncode != 0
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            print(f"{ident} {'killed  ' if killed else 'SURVIVED'} {time.perf_counter() - start:6.1f}s  {what}  [{last}]", flush=True)
            if not killed:
                survivors.append(ident)
    print(f"{len(chosen) - len(survivors)}/{len(chosen)} mutants killed" + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
