"""`blockcert minimize`: the minimize surrogate's semantics, the scores, the search, the certificate and its verification."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch
from blockcert_surrogates import derive as plugin_derive
from blockcert_surrogates.transforms import full_ranks, pack_mask, unpack_mask
from hypothesis import given
from hypothesis import strategies as st
from irfactory import extended_ir, tiny_ir
from test_run import make_model_dir

import blockcert
from blockcert.artifacts.digest import canonical_json, tensors_sha256
from blockcert.errors import UserError
from blockcert.interpreter import replay
from blockcert.ir import to_dict
from blockcert.metrics import Policy
from blockcert.minimize import Candidate, Meter, _smallest, attribution_scores, minimize, score_order, search_block
from blockcert.pipeline.staircase import suffix_losses
from blockcert.pipeline.trace import capture
from blockcert.plugins import get_plugins
from blockcert.verifier.core import verify

LOG0 = "0" * 64
#: loose enough that a tiny random block has something to give away, strict enough that not everything goes
LOOSE = Policy(tau_act=0.25, tau_loss=0.05, alpha_act=0.9, alpha_loss=0.9, name="relative")


def spec_for(ir, heads=None, neurons=None, rank=None) -> str:
    h = np.ones(ir.attn.n_heads, bool) if heads is None else heads
    n = np.ones(ir.mlp.up.weight.shape[1], bool) if neurons is None else neurons
    r = full_ranks(ir) | (rank or {})
    return Candidate(h, n, tuple(r.items())).spec("attribution", LOG0)


@pytest.mark.parametrize("ir", [tiny_ir(), extended_ir(), extended_ir(whole_qk=True)], ids=["gated", "extended", "whole-qk"])
def test_all_on_minimize_is_the_base_ir_bit_for_bit(ir):
    derived = plugin_derive(ir, spec_for(ir))
    assert tensors_sha256(to_dict(derived)[1]) == tensors_sha256(to_dict(ir)[1])
    assert derived.source["derivation.kept.heads"] == f"{ir.attn.n_heads}/{ir.attn.n_heads}"
    import hashlib

    ones = np.packbits(np.ones(ir.mlp.up.weight.shape[1], bool), bitorder="little").tobytes()
    assert derived.source["derivation.mask_sha256.neurons"] == hashlib.sha256(ones).hexdigest()


@given(st.lists(st.booleans(), min_size=1, max_size=70))
def test_mask_hex_round_trips(bits):
    keep = np.array(bits)
    assert np.array_equal(unpack_mask(pack_mask(keep), keep.size, "x"), keep)


def test_mask_hex_refuses_wrong_length_and_padding_bits():
    ir = tiny_ir()  # 4 heads: one byte
    for bad in ("0f0f", "1f"):  # two bytes; bit 4 set beyond head 3
        with pytest.raises(UserError, match="heads"):
            plugin_derive(ir, spec_for(ir).replace("heads=0f", f"heads={bad}"))


def test_cleared_units_and_heads_contribute_nothing():
    """A cleared hidden unit is the same block with that unit deleted; a cleared head is prune-heads of it."""
    ir = tiny_ir(f=12)
    x = np.random.default_rng(3).standard_normal((2, 5, ir.d_model)).astype(np.float64)
    units = np.ones(12, bool)
    units[[1, 4, 7]] = False
    heads = np.array([True, False, True, True])
    got = replay(plugin_derive(ir, spec_for(ir, heads=heads, neurons=units)), x).output
    keep = np.flatnonzero(units)
    m = ir.mlp
    small = attrs.evolve(m, up=attrs.evolve(m.up, weight=m.up.weight[:, keep], bias=m.up.bias[keep]),
                         gate=attrs.evolve(m.gate, weight=m.gate.weight[:, keep], bias=m.gate.bias[keep]),
                         down=attrs.evolve(m.down, weight=m.down.weight[keep]))
    pruned = plugin_derive(attrs.evolve(ir, mlp=small), "prune-heads:heads=1")
    want = replay(pruned, x).output
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rank_truncation_is_the_svd_and_full_rank_is_untouched():
    ir = tiny_ir()
    derived = plugin_derive(ir, spec_for(ir, rank={"attn.q": 3}))
    s = np.linalg.svd(derived.attn.q.weight.astype(np.float64), compute_uv=False)
    assert np.sum(s > 1e-5 * s[0]) == 3
    assert derived.attn.k.weight.tobytes() == ir.attn.k.weight.tobytes()
    assert derived.source["derivation.rank.attn.q"] == f"3/{full_ranks(ir)['attn.q']}"
    with pytest.raises(UserError, match="full rank"):
        plugin_derive(ir, spec_for(ir, rank={"attn.q": 99}))


@given(st.integers(0, 300), st.integers(0, 300))
def test_binary_search_finds_the_threshold_of_a_monotone_predicate(n, k):
    k = min(k, n)
    calls = []

    def passes(m):
        calls.append(m)
        return m >= k

    assert _smallest(n, passes) == k
    assert len(calls) <= max(1, n).bit_length() + 1


def test_score_order_is_by_score_and_seeded_on_ties():
    scores = np.array([0.5, 2.0, 0.5, 0.5, 1.0])
    a, b = score_order(scores, 0), score_order(scores, 0)
    assert list(a) == list(b) and list(a[:2]) == [1, 4] and set(a[2:]) == {0, 2, 3}
    assert len({tuple(score_order(scores, s)[2:]) for s in range(20)}) > 1  # the seed decides ties


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, byte_tokenizer):
    path = make_model_dir(tmp_path_factory.mktemp("minimize") / "model", byte_tokenizer, layers=3)
    loaded = blockcert.load_model(path)
    from blockcert.pipeline.promptsets import load_prompts

    traces = capture(loaded, load_prompts("builtin:default"))
    return path, loaded, traces


def _stitched_loss(loaded, traces, ir, index) -> np.ndarray:
    outs = [replay(ir, torch.from_numpy(t.residual[index])[None]).output[0].numpy() for t in traces]
    losses = suffix_losses(loaded, traces, [index], lambda _: outs, 8)[index]
    return np.array([float(np.sum(x.astype(np.float64))) for x in losses])


def test_attribution_scores_are_the_gradient_of_the_stitched_loss(tiny):
    """Σ_p |∂L_p/∂g|, checked against central finite differences of the pipeline's own stitched losses."""
    _, loaded, traces = tiny
    index = 1
    base = get_plugins().to_ir(loaded.native, index, max(t.n_tokens for t in traces))
    heads, units = attribution_scores(loaded, traces, base, index)
    assert heads.shape == (base.attn.n_heads,) and units.shape == (base.mlp.up.weight.shape[1],)
    delta = 1e-2
    for h in range(base.attn.n_heads):
        gate = lambda g: attrs.evolve(base, attn=attrs.evolve(base.attn, head_gate=base.attn.head_gate * np.where(  # noqa: E731
            np.arange(base.attn.n_heads) == h, g, 1.0).astype(np.float32)))
        fd = (_stitched_loss(loaded, traces, gate(1 + delta), index) - _stitched_loss(loaded, traces, gate(1 - delta), index)) / (2 * delta)
        assert np.sum(np.abs(fd)) == pytest.approx(heads[h], rel=0.05, abs=1e-4)
    for j in np.argsort(-units)[:3]:
        def unit(g, j=j):
            w = base.mlp.down.weight.copy()
            w[j] *= np.float32(g)
            return attrs.evolve(base, mlp=attrs.evolve(base.mlp, down=attrs.evolve(base.mlp.down, weight=w)))
        fd = (_stitched_loss(loaded, traces, unit(1 + delta), index) - _stitched_loss(loaded, traces, unit(1 - delta), index)) / (2 * delta)
        assert np.sum(np.abs(fd)) == pytest.approx(units[j], rel=0.05, abs=1e-4)


def test_search_removes_something_under_a_loose_policy_and_every_candidate_is_logged(tiny):
    _, loaded, traces = tiny
    index = 1
    base = get_plugins().to_ir(loaded.native, index, max(t.n_tokens for t in traces))
    heads, units = attribution_scores(loaded, traces, base, index)
    meter = Meter(loaded, traces, base, index, LOOSE, 8, "attribution")
    final, measured = search_block(meter, "all", head_scores=heads, unit_scores=units, refine=4)
    kept = final.kept()
    assert measured.certified
    assert kept["heads"] + kept["neurons"] + sum(kept["rank"].values()) < base.attn.n_heads + base.mlp.up.weight.shape[1] + sum(full_ranks(base).values())
    assert [e["step"] for e in meter.log] == list(range(len(meter.log)))
    assert meter.log[0]["phase"] == "base" and meter.log[0]["certified"]
    # rejected on cov_act: the loss suffix never ran, and such a candidate is never certified
    assert all(not e["certified"] for e in meter.log if e["rejected_before_loss"])
    # an early stop decides as the full measurement would: its logged cov_act bounds the true one from above, below alpha
    from blockcert.metrics import act_thresholds, cov_act
    from blockcert.pipeline.certify import replay_all

    early = [e for e in meter.log if e["prompts_replayed"] < len(traces)]
    assert early, "no candidate stopped early"
    for e in early[:3]:
        cand = Candidate(unpack_mask(e["heads"], base.attn.n_heads, "h"), unpack_mask(e["neurons"], base.mlp.up.weight.shape[1], "n"),
                         tuple((k, e["rank"][k]) for k in full_ranks(base)))
        _, errors, norms, _ = replay_all(meter.derive(cand), traces, index)
        true = cov_act(np.concatenate(errors), np.concatenate([act_thresholds(LOOSE, n) for n in norms]))
        assert true <= e["cov_act"] < LOOSE.alpha_act
    # a strict policy keeps more: the paper's absolute tau on float32 cannot lose a whole head of a random block
    strict = Meter(loaded, traces, base, index, Policy(), 8, "attribution")
    final_strict, _ = search_block(strict, "heads", head_scores=heads, unit_scores=units, refine=4)
    assert final_strict.kept()["heads"] >= kept["heads"]


@pytest.fixture(scope="module")
def minimized(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("mz") / "M"
    result = minimize(loaded=tiny[1], blocks=[0, 2], budget="all", prompts="builtin:default", policy=LOOSE, out=out, refine=4,
                      held_out="builtin:stress")
    return out, result


def test_minimize_writes_certified_runs_that_verify(minimized):
    out, result = minimized
    summary = json.loads((out / "minimize.json").read_text())
    assert [b["block"] for b in summary["blocks"]] == [0, 2]
    for b in summary["blocks"]:
        assert b["certified"] and b["metrics"] == b["search_metrics"]  # the certifying run measures what the search measured
        cert = json.loads((out / b["run"] / f"block_{b['block']:03d}" / "certificate.json").read_text())
        spec = cert["predicate"]["surrogate"]["spec"]
        assert spec.startswith("minimize:") and f"log={b['search_log_sha256']}" in spec
        assert cert["predicate"]["surrogate"]["notes"]["kept.heads"] == f"{b['kept']['heads']}/{b['totals']['heads']}"
    report = verify(out, policy=LOOSE)
    assert report.ok, [(c.path, [x for x in c.checks if not x.ok]) for c in report.certificates if not c.ok]
    assert sum(c.kind == "minimize-search" for c in report.certificates) == 2
    # the held-out runs certify the very same surrogate (the same spec) on other prompts, and verify too
    assert sum(c.path.startswith("heldout/") and c.block is not None for c in report.certificates) == 2
    for b in summary["blocks"]:
        held = json.loads((out / b["held_out"]["run"] / f"block_{b['block']:03d}" / "certificate.json").read_text())
        assert held["predicate"]["prompts"]["description"] == "builtin:stress"
        cert = json.loads((out / b["run"] / f"block_{b['block']:03d}" / "certificate.json").read_text())
        assert held["predicate"]["surrogate"]["spec"] == cert["predicate"]["surrogate"]["spec"]


def test_a_tampered_search_log_fails_verification(minimized, tmp_path):
    import shutil

    out, _ = minimized
    copy = tmp_path / "M"
    shutil.copytree(out, copy)
    log_path = copy / "search" / "block_000.json"
    log = json.loads(log_path.read_text())
    log["candidates"][0]["cov_act"] = 0.5  # a forger rewrites the search history
    log_path.write_bytes(canonical_json(log))
    report = verify(copy, level="hashes", policy=LOOSE)
    failed = [x.name for c in report.certificates for x in c.checks if not x.ok]
    assert not report.ok and "search log SHA-256 = the spec's log" in failed


def test_the_search_is_deterministic(tiny, minimized, tmp_path):
    out, first = minimized
    again = minimize(loaded=tiny[1], blocks=[0], budget="all", prompts="builtin:default", policy=LOOSE, out=tmp_path / "again", refine=4)
    assert again.blocks[0]["search_log_sha256"] == first.blocks[0]["search_log_sha256"]


def test_no_certified_candidate_reports_the_whole_block_uncertified(tiny, tmp_path):
    impossible = Policy(tau_act=0.0, tau_loss=0.0, alpha_act=1.0, alpha_loss=1.0)
    result = minimize(loaded=tiny[1], blocks=[1], budget="heads", prompts="builtin:default", policy=impossible, out=tmp_path / "M")
    (b,) = result.blocks
    assert not b["certified"] and not result.certified_all
    assert b["kept"]["heads"] == b["totals"]["heads"] and b["candidates"] == 1


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_usage_errors_and_exit_codes(tiny, tmp_path):
    path = str(tiny[0])
    proc = cli("minimize", "--model", path, "--budget", "layers", "--out", str(tmp_path / "a"))
    assert proc.returncode == 2 and "--budget 'layers'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("minimize", "--model", path, "--blocks", "9", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("minimize", "--model", path, "--blocks", "1", "--budget", "heads", "--prompts", "builtin:default",
               "--tau-act", "0", "--tau-loss", "0", "--alpha-act", "1", "--alpha-loss", "1", "--out", str(tmp_path / "c"))
    assert proc.returncode == 1 and "not certified" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "c" / "minimize.json").read_text())["blocks"][0]["certified"] is False
