"""`blockcert run` end to end: metrics against independent computations, certificates, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rfc8785
import torch
from safetensors.numpy import load_file

import blockcert
from blockcert.artifacts.digest import file_sha256, tensors_sha256
from blockcert.errors import UserError
from blockcert.interpreter import replay
from blockcert.ir import load_ir
from blockcert.metrics import Policy
from blockcert.pipeline.certify import run
from strategies import seeded_model


def make_model_dir(path: Path, tokenizer, *, layers: int = 3, max_pos: int = 512, scale: float = 1.0) -> Path:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos)
    model = seeded_model(config, 11)
    if scale != 1.0:
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, byte_tokenizer):
    """A small random-init Llama with the byte tokenizer, as a local HF directory."""
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "model", byte_tokenizer)


def test_cov_loss_equals_naive_hooked_forward(tiny_dir, tmp_path):
    """Loss coverage from the batched, prefix-reusing suffix runs equals a naive full forward per prompt
    with block l swapped for its IR replay by a forward hook."""
    loaded = blockcert.load_model(tiny_dir)
    policy = Policy(tau_loss=1e-4)
    result = run(loaded=loaded, prompts="builtin:stress", blocks="all", out=tmp_path / "out", policy=policy, batch_size=4)
    prompts = blockcert.prompts.builtin("stress")
    model = loaded.model
    for block in result.blocks:
        ir = load_ir(tmp_path / "out" / f"block_{block.index:03d}" / "ir")
        stored = load_file(tmp_path / "out" / f"block_{block.index:03d}" / "errors.safetensors")
        layer = model.model.layers[block.index]

        def swap(module, args, kwargs, output):
            return replay(ir, args[0] if args else kwargs["hidden_states"]).output

        handle = layer.register_forward_hook(swap, with_kwargs=True)
        try:
            base_all, stitched_all = [], []
            for k, text in enumerate(prompts):
                ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
                with torch.no_grad():
                    handle.remove()
                    base_logits = model(ids).logits
                    handle = layer.register_forward_hook(swap, with_kwargs=True)
                    stitched_logits = model(ids).logits
                nll = lambda logits: -torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
                base_all.append(nll(base_logits).numpy())
                stitched_all.append(nll(stitched_logits).numpy())
                np.testing.assert_allclose(stored[f"p{k:03d}.loss_stitched"], stitched_all[-1], atol=1e-5)
        finally:
            handle.remove()
        base, stitched = np.concatenate(base_all).astype(np.float64), np.concatenate(stitched_all).astype(np.float64)
        naive = float(np.sum(base * (np.abs(stitched - base) <= policy.tau_loss)) / np.sum(base))
        assert abs(block.metrics.cov_loss - naive) <= 1e-6, block.index


def test_perturbed_ir_lowers_coverage(tiny_dir, tmp_path):
    """The metrics respond: a replay that ignores the causal mask is caught by cov_act, cov_path, cov_loss."""
    import attrs

    loaded = blockcert.load_model(tiny_dir)

    class InvertMask:
        @blockcert.hookimpl
        def blockcert_replay(self, ir, x, positions, key_mask):
            broken = attrs.evolve(ir, attn=attrs.evolve(ir.attn, mask=~ir.attn.mask | np.eye(ir.n_ctx, dtype=bool)))
            return replay(broken, x, positions, key_mask)

    plugins = blockcert.get_plugins()
    plugins.pm.register(InvertMask(), name="test-invert-mask")
    try:
        bad = run(loaded=loaded, prompts="builtin:default", blocks="1", out=tmp_path / "bad")
    finally:
        plugins.pm.unregister(name="test-invert-mask")
    good = run(loaded=loaded, prompts="builtin:default", blocks="1", out=tmp_path / "good")
    g, b = good.blocks[0].metrics, bad.blocks[0].metrics
    assert good.blocks[0].certified and not bad.blocks[0].certified
    assert b.cov_path < 0.2 < g.cov_path == 1.0
    assert b.cov_act < g.cov_act and b.cov_loss < g.cov_loss and b.epsilon > 100 * g.epsilon


def _check_certificate(root: Path, cert_path: Path) -> dict:
    raw = cert_path.read_bytes()
    cert = json.loads(raw)
    assert rfc8785.dumps(cert) == raw  # canonical bytes
    assert cert["_type"] == "https://in-toto.io/Statement/v1"
    assert cert["predicateType"].startswith("https://blockcert.dev/predicate/block-certificate/")
    names = [s["name"] for s in cert["subject"]]
    assert names == sorted(names) and "traces/index.json" in names
    for s in cert["subject"]:
        assert not s["name"].startswith("/") and ".." not in s["name"].split("/")
        path = root / s["name"]
        assert s["digest"]["sha256"] == file_sha256(path), s["name"]
        if s["name"].endswith(".safetensors"):
            assert s["annotations"]["blockcert.tensors_sha256"] == tensors_sha256(load_file(path))
    return cert


@pytest.mark.slow
def test_default_model_identity_ir_is_certified(tmp_path):
    """The acceptance run: blocks 0, 15, 29 of the real SmolLM2 on the stress prompts."""
    out = tmp_path / "D"
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--blocks", "0,15,29", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary == json.loads((out / "metrics.json").read_text())
    assert summary["prompts_evaluated"] == 10 and summary["certified_all"] is True
    for b in summary["blocks"]:
        assert b["cov_act"] >= 0.99 and b["cov_loss"] == 1.0 and b["cov_path"] == 1.0
        assert 0 < b["epsilon"] <= 5e-3 and b["rel_max"] < 1e-5
        cert = _check_certificate(out, out / b["certificate"])
        pred = cert["predicate"]
        assert pred["block"]["index"] == b["index"] and pred["verdict"]["certified"] is True
        assert pred["metrics"]["epsilon"] == b["epsilon"]
        assert pred["model"]["weights_sha256"] and pred["model"]["source_sha256"]
        assert pred["policy"] == {"tau_act": 0.01, "tau_loss": 0.001, "alpha_act": 0.94, "alpha_loss": 0.9, "name": "paper", "k": 4}
        errors = load_file(out / f"block_{b['index']:03d}" / "errors.safetensors")
        assert max(float(v.max()) for k, v in errors.items() if k.endswith(".error")) == pytest.approx(b["epsilon"])
    assert not list(out.rglob(".*.tmp"))
    # a third party re-derives everything, at every depth, and the torch-free float64 reference agrees
    from blockcert.verifier.core import verify

    for kwargs in ({"level": "hashes"}, {"level": "replay"}, {"level": "replay", "reference": "numpy"},
                   {"level": "full", "model": "smollm2-135m-instruct"}):
        report = verify(out, **kwargs)
        assert report.ok, (kwargs, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok])
    proc = subprocess.run([sys.executable, "-m", "blockcert", "verify", str(out), "--level", "full", "--model", "smollm2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "verified" in proc.stdout, proc.stdout + proc.stderr


def test_bfloat16_native_gives_larger_errors(smollm2, tmp_path):
    f32 = run(loaded=smollm2, prompts="builtin:default", blocks=[0, 15], out=tmp_path / "f32")
    bf16 = run(prompts="builtin:default", blocks=[0, 15], dtype="bfloat16", out=tmp_path / "bf16")
    assert bf16.dtype == "bfloat16"
    for a, b in zip(f32.blocks, bf16.blocks):
        assert b.metrics.epsilon > 100 * a.metrics.epsilon
        assert b.metrics.cov_act < a.metrics.cov_act


def test_resume_keeps_finished_blocks_and_matches_uninterrupted(tiny_dir, tmp_path):
    loaded = blockcert.load_model(tiny_dir)
    full = run(loaded=loaded, prompts="builtin:default", blocks="all", out=tmp_path / "full")
    part = tmp_path / "part"
    run(loaded=loaded, prompts="builtin:default", blocks="all", out=part)
    (part / "block_001" / "certificate.json").unlink()  # as if killed before block 1 finished
    (part / "block_002" / "metrics.json").write_text("{")  # and mid-way through block 2
    resumed = run(loaded=loaded, prompts="builtin:default", blocks="all", out=part, resume=True)
    assert [b.resumed for b in resumed.blocks] == [True, False, False]
    for a, b in zip(full.blocks, resumed.blocks):
        name = f"block_{a.index:03d}/certificate.json"
        assert (tmp_path / "full" / name).read_bytes() == (part / name).read_bytes()
        assert a.certificate_id == b.certificate_id
    with pytest.raises(UserError, match="different settings"):
        run(loaded=loaded, prompts="builtin:default", out=part, resume=True, policy=Policy(alpha_act=0.5))
    with pytest.raises(UserError, match="not empty"):
        run(loaded=loaded, prompts="builtin:default", out=part)


def test_force_refuses_to_delete_a_foreign_directory(tiny_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="refusing"):
        run(tiny_dir, prompts="builtin:default", out=tmp_path, force=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_prompt_longer_than_context_writes_nothing(byte_tokenizer, tmp_path):
    short = make_model_dir(tmp_path / "short", byte_tokenizer, max_pos=16)
    with pytest.raises(UserError, match="prompt 0 has .* tokens, more than the model's context of 16"):
        run(short, prompts="builtin:default", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_finite_activations_are_a_user_error(byte_tokenizer, tmp_path):
    hot = make_model_dir(tmp_path / "hot", byte_tokenizer, scale=1e6)
    with pytest.raises(UserError, match="non-finite activations in prompt 0"):
        run(hot, prompts="builtin:default", dtype="float16", out=tmp_path / "out")
    assert not (tmp_path / "out" / "traces").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--blocks", "30"], "block 30 does not exist"),
        (["--blocks", "x"], "not a block index"),
        (["--tau-act", "-1"], "tau_act"),
        (["--dtype", "int8"], "--dtype"),
        (["--model", "/no/such/dir"], "/no/such/dir"),
        (["--arch", "mamba"], "mamba"),
    ],
)
@pytest.mark.slow
def test_cli_bad_input_exits_2(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_empty_prompt_file_exits_2(tmp_path):
    (tmp_path / "p.txt").write_text("\n\n")
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "holds no prompts" in proc.stderr and "Traceback" not in proc.stderr


def test_jsonl_prompts(tiny_dir, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "A causal mask hides the future."}\n"Plain strings work too."\n')
    result = run(tiny_dir, prompts=str(tmp_path / "p.jsonl"), blocks="0", out=tmp_path / "o")
    assert result.n_prompts == 2


def test_run_takes_a_settings_record_or_its_fields(tiny_dir, tmp_path):
    """``run(settings=RunSettings(...))`` writes exactly what the same options as keywords write; both at once,
    or an unknown option, is a TypeError naming them."""
    from blockcert.pipeline.certify import RunSettings

    loaded = blockcert.load_model(tiny_dir)
    run(loaded=loaded, prompts="builtin:default", blocks="1", out=tmp_path / "kw", bounds=True)
    run(loaded=loaded, settings=RunSettings(prompts="builtin:default", blocks="1", out=tmp_path / "rec", bounds=True))
    for rel in ("block_001/certificate.json", "block_001/bounds.json", "run.json", "metrics.json"):
        assert (tmp_path / "kw" / rel).read_bytes() == (tmp_path / "rec" / rel).read_bytes(), rel
    with pytest.raises(TypeError, match="blocks"):
        run(loaded=loaded, settings=RunSettings(), blocks="1")
    with pytest.raises(TypeError, match="colour"):
        run(loaded=loaded, colour="red")
