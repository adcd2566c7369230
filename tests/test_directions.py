"""Directional edits (issue #23): the direction artifact, direction-ablate / direction-add in their hook, weights and
IR forms, edit certificates with locality metrics and the direction's provenance, and what the verifier refuses."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import rfc8785
import torch
from strategies import seeded_model
from test_run import make_model_dir

import blockcert
from blockcert.edit.certify import Decoding, certify_edit, edit_handle
from blockcert.edit.direction import compute_direction, last_token_states, load_direction, make_direction, write_direction
from blockcert.errors import UserError
from blockcert.interpreter import replay
from blockcert.ir import Norm
from blockcert.plugins import get_plugins
from blockcert.spec import parse_spec
from blockcert.verifier.core import verify

FAST = Decoding(max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, byte_tokenizer):
    path = make_model_dir(tmp_path_factory.mktemp("dirs") / "model", byte_tokenizer, layers=3)
    return path, blockcert.load_model(path)


@pytest.fixture(scope="module")
def tied(tmp_path_factory, byte_tokenizer):
    """The same shape with the LM head tied to the embedding (as SmolLM2's is)."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=len(byte_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tied") / "model"
    seeded_model(config, 5).save_pretrained(path)
    byte_tokenizer.save_pretrained(path)
    return blockcert.load_model(path)


@pytest.fixture(scope="module")
def direction(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("direction") / "D"
    make_direction(tiny[1], layer=2, out=out)
    return out


def random_direction(tmp_path: Path, d: int, seed: int = 0) -> Path:
    write_direction(tmp_path / f"r{seed}", np.random.default_rng(seed).standard_normal(d), {"note": "random, for tests"})
    return tmp_path / f"r{seed}"


IDS = torch.tensor([[5, 17, 2, 99, 7, 31, 64, 8]])


# ---------------------------------------------------------------------------------------------------
# The artifact
# ---------------------------------------------------------------------------------------------------


def test_direction_is_the_normalised_difference_of_means(tiny, direction):
    """Recomputed here by hand: x^(2) at the last token of each prompt, one prompt at a time, no padding."""
    from blockcert.edit.certify import prompt_texts
    from blockcert.edit.refusal import load_corpus

    _, loaded = tiny
    d = load_direction(direction, loaded.native.d_model)
    items, _ = load_corpus("builtin:refusal")
    texts = prompt_texts(loaded, items, Decoding())
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([loaded.tokenizer(text, add_special_tokens=False)["input_ids"]])
            rows.append(loaded.native.residual_stream(ids)[2][0, -1].double().numpy())
    rows = np.stack(rows)
    labels = np.array([i.label for i in items])
    diff = rows[labels == "refuse"].mean(0) - rows[labels == "answer"].mean(0)
    np.testing.assert_allclose(d.vector, diff / np.linalg.norm(diff), atol=1e-5)
    assert abs(np.linalg.norm(d.vector.astype(np.float64)) - 1) < 1e-6
    meta = json.loads((direction / "direction.json").read_text())
    assert meta["layer"] == 2 and meta["corpus"]["refuse"] == 30 and meta["corpus"]["answer"] == 30
    assert meta["sha256"] == hashlib.sha256((direction / "direction.safetensors").read_bytes()).hexdigest()
    assert meta["model"]["weights_sha256"] == loaded.weights_sha256()
    # the batched, right-padded states equal the one-at-a-time ones
    np.testing.assert_allclose(last_token_states(loaded, texts[:5], 2, batch_size=4), rows[:5], atol=1e-5)


def test_direction_artifact_is_checked(tiny, direction, tmp_path):
    _, loaded = tiny
    d = tmp_path / "D"
    shutil.copytree(direction, d)
    with pytest.raises(UserError, match="does not match the model's 64"):
        load_direction(d, 64)
    data = bytearray((d / "direction.safetensors").read_bytes())
    data[-1] ^= 1
    (d / "direction.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="SHA-256"):
        load_direction(d)
    with pytest.raises(UserError, match="not found"):
        load_direction(tmp_path / "nowhere")
    with pytest.raises(UserError, match="zero"):
        write_direction(tmp_path / "Z", np.zeros(32))
    with pytest.raises(UserError, match="--layer 9 does not exist"):
        compute_direction(loaded, layer=9)


# ---------------------------------------------------------------------------------------------------
# The edit: hook, weights, IR
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "tied"])
def test_ablation_hook_and_orthogonalised_weights_agree(model, request, tmp_path):
    loaded = request.getfixturevalue(model)
    loaded = loaded[1] if isinstance(loaded, tuple) else loaded
    r = random_direction(tmp_path, loaded.native.d_model)
    vec = torch.from_numpy(load_direction(r).vector.copy())
    with torch.no_grad():
        base = loaded.model(IDS).logits
        weights_before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        for where in ("layers=all", "layer=1"):
            outs = {}
            for form in ("hook", "weights"):
                with edit_handle(loaded, f"direction-ablate:{where},direction={r},form={form}"):
                    outs[form] = loaded.model(IDS).logits
                    xs = loaded.native.residual_stream(IDS)
                if where == "layers=all":  # every block's output is orthogonal to r (x^(0) is projected inside block 0
                    # by the hook form, in the embedding by the weights form)
                    assert max(float((x[0] @ vec).abs().max()) for x in xs[1:]) < 1e-4
                else:  # block 1 writes nothing along r: x^(2)·r = x^(1)·r
                    assert torch.allclose(xs[2][0] @ vec, xs[1][0] @ vec, atol=1e-4)
            assert not torch.allclose(outs["hook"], base, atol=1e-3)
            torch.testing.assert_close(outs["hook"], outs["weights"], atol=1e-4, rtol=1e-4)
        after = loaded.model(IDS).logits
    assert torch.equal(after, base)  # removed: the model is restored bit for bit
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, weights_before[k]), k
    if model == "tied":
        assert loaded.model.get_output_embeddings().weight is loaded.model.get_input_embeddings().weight


@pytest.mark.parametrize("spec", ["direction-ablate:layer=1,direction={r}", "direction-add:layer=1,alpha=3.5,direction={r}",
                                  "direction-ablate:layers=all,direction={r}"])
def test_ir_form_matches_the_live_edit(tiny, tmp_path, spec):
    _, loaded = tiny
    text = spec.format(r=random_direction(tmp_path, 32, seed=3))
    ir = blockcert.to_ir(loaded, 1, n_ctx=16)
    edited = get_plugins().edit(ir, parse_spec(text))
    assert edited.source["edit"] == str(edit_handle(loaded, text))
    with torch.no_grad():
        xs = loaded.native.residual_stream(IDS)
        with edit_handle(loaded, text):
            live = loaded.native.call_block(1, xs[1], torch.arange(IDS.shape[1])[None])
    assert not torch.allclose(live, xs[2], atol=1e-3)  # the edit does something
    torch.testing.assert_close(replay(edited, xs[1]).output, live, atol=1e-5, rtol=1e-5)
    if "alpha" in text:  # direction-add: the output moves by exactly alpha * r
        torch.testing.assert_close(live - xs[2], 3.5 * torch.from_numpy(load_direction(text.split("direction=")[1]).vector.copy()).expand_as(live),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("text, needle", [
    ("direction-ablate:layer=1", "'direction' is required"),
    ("direction-ablate:layer=1,layers=all,direction=D", "exactly one of"),
    ("direction-ablate:layers=3,direction=D", "takes only 'all'"),
    ("direction-add:layers=all,alpha=1,direction=D", "only for direction-ablate"),
    ("direction-add:layer=1,direction=D", "'alpha' is required"),
    ("direction-add:layer=1,alpha=x,direction=D", "'alpha' must be a number"),
    ("direction-add:layer=1,alpha=1,direction=D,form=weights", "form must be"),
    ("direction-ablate:layer=1,direction=D,beta=2", "unknown parameter 'beta'"),
    ("direction-ablate:layer=7,direction=D", "does not exist"),
    ("direction-ablate:layer=1,direction=/no/such/dir", "direction not found"),
])
def test_bad_direction_specs(tiny, tmp_path, text, needle):
    r = random_direction(tmp_path, 32)
    with pytest.raises(UserError, match=needle):
        edit_handle(tiny[1], text.replace("direction=D", f"direction={r}"))


def test_post_norm_blocks_are_refused(tiny, tmp_path):
    """Gemma's sandwich norms: the output projection is not the last map before the stream."""
    _, loaded = tiny
    r = random_direction(tmp_path, 32)
    ir = blockcert.to_ir(loaded, 1, n_ctx=8)
    sandwich = attrs.evolve(ir, post_mlp_norm=Norm("rmsnorm", np.ones(32, np.float32), 1e-6))
    with pytest.raises(UserError, match="normalises its sublayer outputs"):
        get_plugins().edit(sandwich, parse_spec(f"direction-ablate:layer=1,direction={r}"))


# ---------------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certified(tiny, direction, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dir-cert") / "E"
    certify_edit(loaded=tiny[1], spec=f"direction-ablate:layers=all,direction={direction}", out=out, decoding=FAST)
    return out


def failures(root: Path, **kw) -> str:
    report = verify(root, **kw)
    assert not report.ok
    return "\n".join(f"{ch.name}: {ch.detail}" for c in report.certificates for ch in c.checks if not ch.ok)


def rehash(root: Path) -> None:
    """What a forger with our source does after changing a file: every digest redone."""
    from blockcert.certificate import subject

    cert = json.loads((root / "certificate.json").read_text())
    cert["subject"] = [subject(root, s["name"]) for s in cert["subject"] if (root / s["name"]).is_file()]
    (root / "certificate.json").write_bytes(rfc8785.dumps(cert))


def test_directional_edit_certificate_verifies_at_every_level(certified, tiny):
    path, _ = tiny
    cert = json.loads((certified / "certificate.json").read_text())
    names = {s["name"] for s in cert["subject"]}
    assert {"direction/direction.json", "direction/direction.safetensors"} <= names
    edit = cert["predicate"]["edit"]
    assert edit["spec"] == "direction-ablate:layers=all,direction=direction"
    assert edit["direction"]["layer"] == 2 and edit["direction"]["position"].startswith("last prompt token")
    loc = cert["predicate"]["metrics"]["locality"]
    assert loc["neutral"]["kl_mean"] > 0 and loc["neutral"]["tokens"] > 0 and loc["stress"]["tokens"] > 0
    assert 0 <= loc["benign"]["unchanged"] <= loc["benign"]["total"] == 30
    for level in ("hashes", "replay", "full"):
        report = verify(certified, level=level, model=str(path))
        assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    checks = {ch.name for c in verify(certified, level="full", model=str(path)).certificates for ch in c.checks}
    assert "direction recomputed from its corpus" in checks and "re-measured neutral prompt 0 kl_mean" in checks


def test_forged_direction_provenance_fails_at_full(certified, tiny, tmp_path):
    """A direction that was not computed where it says (here: layer 1 claimed, layer 2 used), with every digest
    consistent: hashes and replay cannot tell, full recomputes it from the corpus and does."""
    path, _ = tiny
    root = tmp_path / "E"
    shutil.copytree(certified, root)
    meta = json.loads((root / "direction" / "direction.json").read_text())
    meta["layer"] = 1
    (root / "direction" / "direction.json").write_bytes(rfc8785.dumps(meta))
    cert = json.loads((root / "certificate.json").read_text())
    cert["predicate"]["edit"]["direction"] = meta
    (root / "certificate.json").write_bytes(rfc8785.dumps(cert))
    manifest = json.loads((root / "edit.json").read_text())
    manifest["edit"]["direction"] = meta
    (root / "edit.json").write_bytes(rfc8785.dumps(manifest))
    rehash(root)
    assert verify(root, level="replay", model=str(path)).ok
    assert "direction recomputed from its corpus" in failures(root, level="full", model=str(path))


def test_tampered_direction_and_locality_fail(certified, tiny, tmp_path):
    path, _ = tiny

    def copy(name: str) -> Path:
        shutil.copytree(certified, tmp_path / name)
        return tmp_path / name

    # another direction with a consistent digest: direction.json no longer matches the certificate
    root = copy("swap")
    write_direction(root / "direction", np.random.default_rng(1).standard_normal(32), force=True)
    rehash(root)
    assert "direction.json = certificate's edit.direction" in failures(root, level="hashes")
    # the direction files dropped from the certificate
    root = copy("drop")
    shutil.rmtree(root / "direction")
    assert "direction" in failures(root, level="hashes")
    # ... or the certificate rewritten to read a direction from elsewhere, without its copy or provenance
    root = copy("elsewhere")
    shutil.rmtree(root / "direction")
    cert = json.loads((root / "certificate.json").read_text())
    manifest = json.loads((root / "edit.json").read_text())
    for edit in (cert["predicate"]["edit"], manifest["edit"]):
        edit["spec"] = "direction-ablate:layers=all,direction=/tmp/elsewhere"
        del edit["direction"]
    (root / "edit.json").write_bytes(rfc8785.dumps(manifest))
    (root / "certificate.json").write_bytes(rfc8785.dumps(cert))
    rehash(root)
    assert "direction files referenced" in failures(root, level="hashes")
    # a smaller KL claimed, summary and per-prompt entries consistent: arithmetic holds, the re-measurement does not
    root = copy("kl")
    metrics = json.loads((root / "metrics.json").read_text())
    loc = metrics["locality"]
    for e in loc["neutral"]["per_prompt"]:
        e["kl_mean"] /= 10
        e["kl_max"] /= 10
    loc["neutral"]["kl_mean"] = sum(e["tokens"] * e["kl_mean"] for e in loc["neutral"]["per_prompt"]) / loc["neutral"]["tokens"]
    loc["neutral"]["kl_max"] = max(e["kl_max"] for e in loc["neutral"]["per_prompt"])
    (root / "metrics.json").write_bytes(rfc8785.dumps(metrics))
    cert = json.loads((root / "certificate.json").read_text())
    cert["predicate"]["metrics"]["locality"] = loc
    (root / "certificate.json").write_bytes(rfc8785.dumps(cert))
    rehash(root)
    assert verify(root, level="hashes").ok
    assert "re-measured neutral prompt 0 kl_mean" in failures(root, level="replay", model=str(path))
    # a benign share that does not follow from the completions
    root = copy("benign")
    metrics = json.loads((root / "metrics.json").read_text())
    metrics["locality"]["benign"]["unchanged"] = 30
    metrics["locality"]["benign"]["share"] = 1.0
    (root / "metrics.json").write_bytes(rfc8785.dumps(metrics))
    rehash(root)
    assert "locality benign unchanged (recounted)" in failures(root, level="hashes")


@pytest.mark.parametrize("spec", ["direction-ablate:layers=all", "direction-add:layer=1,alpha=3.5", "direction-ablate:layer=2,form=weights"])
def test_numpy_reference_remeasures_directional_edits(certified, tiny, direction, tmp_path, spec):
    """The float64 numpy model (no torch, no producer code) applies the edit with the certificate's own copy of the
    direction and re-measures ε_edit and the final deviation of every prompt; a forged deviation, with every
    summary and digest redone, fails there."""
    path, loaded = tiny
    root = certified if spec == "direction-ablate:layers=all" else tmp_path / "E"
    if root != certified:
        certify_edit(loaded=loaded, spec=f"{spec},direction={direction}", out=root, decoding=FAST)
    report = verify(root, level="replay", model=str(path), reference="numpy")
    assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    names = [ch.name for c in report.certificates for ch in c.checks]
    assert sum(n.startswith("re-measured ") and n.endswith(" epsilon_edit") for n in names) == 60
    forged = tmp_path / "forged"
    shutil.copytree(root, forged)
    metrics = json.loads((forged / "metrics.json").read_text())
    metrics["per_prompt"][0]["final_deviation"] *= 1.01
    metrics["max_final_deviation"] = max(e["final_deviation"] for e in metrics["per_prompt"])
    metrics["amplification"] = metrics["max_final_deviation"] / metrics["epsilon_edit"]
    (forged / "metrics.json").write_bytes(rfc8785.dumps(metrics))
    cert = json.loads((forged / "certificate.json").read_text())
    cert["predicate"]["metrics"].update({k: metrics[k] for k in ("max_final_deviation", "amplification")})
    (forged / "certificate.json").write_bytes(rfc8785.dumps(cert))
    rehash(forged)
    assert verify(forged, level="hashes").ok
    first = metrics["per_prompt"][0]["id"]
    assert f"re-measured {first} final_deviation" in failures(forged, level="replay", model=str(path), reference="numpy")


def test_cli_direction_and_edit(tiny, tmp_path):
    path, _ = tiny

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True, timeout=600)

    res = cli("direction", "--model", str(path), "--layer", "1", "--out", str(tmp_path / "D"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["layer"] == 1
    res = cli("direction", "--model", str(path), "--layer", "1", "--out", str(tmp_path / "D"))
    assert res.returncode == 2 and "--force" in res.stderr and "Traceback" not in res.stderr
    res = cli("direction", "--model", str(path), "--layer", "99", "--out", str(tmp_path / "D2"))
    assert res.returncode == 2 and "--layer 99 does not exist" in res.stderr
    res = cli("edit", "--model", str(path), "--spec", f"direction-add:layer=1,alpha=2,direction={tmp_path / 'D'}",
              "--max-new-tokens", "3", "--out", str(tmp_path / "E"))
    assert res.returncode == 0, res.stderr
    assert "locality: KL" in res.stdout
    res = cli("verify", str(tmp_path / "E"), "--model", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
