"""Streaming (--stream), the staircase loss coverage, executors (local, Ray) and synthetic checkpoints."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from blockcert_llama.synthetic import LlamaShape
from safetensors import safe_open

import blockcert
from blockcert.errors import UserError
from blockcert.model.synthetic import INDEX_FILE, PROMPTS_FILE, synthesize
from blockcert.pipeline.certify import BlockTask, certify_blocks, extract_block, measure_block, plan_groups, run, slice_traces
from blockcert.pipeline.executors import LocalExecutor, get_executor
from blockcert.pipeline.staircase import suffix_losses
from blockcert.pipeline.stitch import stitch
from blockcert.pipeline.trace import capture
from blockcert.verifier.core import verify

SHAPE = LlamaShape(layers=4, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=300, max_positions=256).synthetic("test", "for tests")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 4-layer synthetic Llama in several shards (float32), with the byte tokenizer and 5 prompts of 72 tokens."""
    return synthesize(tmp_path_factory.mktemp("synth") / "model", SHAPE, shard_bytes=150_000, n_prompts=5, prompt_tokens=72)


@pytest.fixture(scope="module")
def prompts(ckpt) -> list[str]:
    return (ckpt / PROMPTS_FILE).read_text().splitlines()


def _same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths whose bytes differ, or that exist on one side only."""
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    fa, fb = files(a), files(b)
    return sorted((fa ^ fb) | {f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False)})


# --- synthetic checkpoints ---------------------------------------------------------------------------


def test_synthetic_checkpoint_is_a_real_hf_layout(ckpt):
    from transformers import AutoModelForCausalLM

    index = json.loads((ckpt / INDEX_FILE).read_text())
    shards = sorted({f for f in index["weight_map"].values()})
    n = len(shards)
    assert n > 1 and shards == [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)  # HF's own loader accepts it
    state = model.state_dict()
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    loaded = blockcert.load_model(ckpt)
    assert loaded.native.n_blocks == 4 and loaded.native.d_model == 64
    text = "Bytes: é, ü."
    assert list(loaded.tokenizer(text)["input_ids"]) == list(text.encode())  # token id = UTF-8 byte
    lines = (ckpt / PROMPTS_FILE).read_text().splitlines()
    assert len(lines) == 5 and all(len(loaded.tokenizer(p)["input_ids"]) == 72 for p in lines)


def test_synthetic_weights_depend_on_seed_and_name_only(ckpt, tmp_path):
    other = synthesize(tmp_path / "one-shard", SHAPE, n_prompts=1, prompt_tokens=8)  # default shard size: one file
    assert len(list(other.glob("*.safetensors"))) == 1
    name = "model.layers.2.mlp.down_proj.weight"
    index = json.loads((ckpt / INDEX_FILE).read_text())["weight_map"]
    with safe_open(ckpt / index[name], "pt") as f, safe_open(other / "model-00001-of-00001.safetensors", "pt") as g:
        assert torch.equal(f.get_tensor(name), g.get_tensor(name))
    reseeded = synthesize(tmp_path / "seed1", SHAPE, seed=1, n_prompts=1, prompt_tokens=8)
    with safe_open(reseeded / "model-00001-of-00001.safetensors", "pt") as g, safe_open(ckpt / index[name], "pt") as f:
        assert not torch.equal(f.get_tensor(name), g.get_tensor(name))


def test_synthesize_refuses_to_overwrite(ckpt, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        synthesize(tmp_path / "busy", "tiny")
    with pytest.raises(UserError, match="unknown --shape"):
        synthesize(tmp_path / "new", "gpt-5")
    for kwargs, flag in (({"n_prompts": -1}, "--prompts"), ({"prompt_tokens": 0}, "--prompt-tokens"), ({"shard_bytes": 0}, "--shard-size")):
        with pytest.raises(UserError, match=f"{flag} must be >= 1"):
            synthesize(tmp_path / "new", "tiny", **kwargs)
    assert not (tmp_path / "new").exists()


# --- the streamed model ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_model_equals_in_memory(ckpt, dtype):
    memory = blockcert.load_model(ckpt, dtype=dtype)
    streamed = blockcert.load_model(ckpt, dtype=dtype, stream=True)
    assert streamed.weights_sha256() == memory.weights_sha256()  # the certified identity, without loading the model
    ids = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(0))
    assert torch.equal(streamed.native.forward(ids), memory.native.forward(ids))
    assert torch.equal(streamed.model(ids).logits, memory.model(ids).logits)  # HF's own forward streams too
    ir_a, ir_b = blockcert.to_ir(streamed, 2, 40), blockcert.to_ir(memory, 2, 40)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(ir_a), _arrays(ir_b)))


def _arrays(ir):
    from blockcert.ir import to_dict

    return [v for _, v in sorted(to_dict(ir)[1].items())]


def test_streamed_model_holds_one_block_at_a_time(ckpt):
    loaded = blockcert.load_model(ckpt, stream=True)
    s = loaded.streamed
    assert all(p.is_meta for p in loaded.model.parameters())  # nothing is read until it is used
    seen = []
    for block in loaded.native.blocks:  # iterating does not install (indexing would)
        block.register_forward_hook(
            lambda *_: seen.append(sum(u.resident for u in s.block_units) + sum(u.resident for u in s.other_units)))
    loaded.native.forward(torch.tensor([[1, 2, 3, 4]]))
    assert seen == [1, 1, 1, 1]  # at each block: that block alone (the embedding was given back)
    assert s.reads == 4 + 3  # each block once (block 0 on use, 1-3 prefetched), embedding, final norm, head


def test_stream_needs_safetensors(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="safetensors"):
        blockcert.load_model(tmp_path, stream=True)


def test_stream_of_a_tied_checkpoint(tmp_path):
    """SmolLM2-style tied embeddings: the checkpoint stores the embedding once; lm_head reads it."""
    from strategies import seeded_model
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=True)
    seeded_model(config, 3).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()
    memory, streamed = blockcert.load_model(tmp_path), blockcert.load_model(tmp_path, stream=True)
    assert streamed.weights_sha256() == memory.weights_sha256()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert torch.equal(streamed.native.forward(ids), memory.native.forward(ids))


# --- the staircase -----------------------------------------------------------------------------------


def test_staircase_equals_block_by_block_bit_for_bit(ckpt, prompts):
    loaded = blockcert.load_model(ckpt)
    traces = capture(loaded, prompts, batch_size=2)
    irs = {i: blockcert.to_ir(loaded, i, 72) for i in range(4)}
    one_pass = suffix_losses(loaded, traces, [0, 1, 2, 3], lambda i: _replays(irs[i], traces, i), batch_size=2)
    for i in range(4):
        alone = measure_block(loaded, traces, irs[i], i, batch_size=2).stitched
        assert all(np.array_equal(a, b) for a, b in zip(one_pass[i], alone)), i
        naive = _naive_suffix(loaded, traces, _replays(irs[i], traces, i), i)  # one prompt at a time, no staircase
        assert max(float(np.abs(a - b).max()) for a, b in zip(one_pass[i], naive)) <= 1e-6, i


def _replays(ir, traces, index):
    return [blockcert.replay(ir, torch.from_numpy(t.residual[index])[None]).output[0].numpy() for t in traces]


@torch.no_grad()
def _naive_suffix(loaded, traces, outputs, index):
    native, out = loaded.native, []
    for t, y in zip(traces, outputs):
        x = torch.from_numpy(y)[None]
        for j in range(index + 1, native.n_blocks):
            x = native.call_block(j, x, torch.arange(t.n_tokens)[None])
        logp = torch.log_softmax(native.head(x)[0, :-1].float(), -1)
        out.append(-logp.gather(-1, torch.from_numpy(t.input_ids[1:])[:, None])[:, 0].numpy())
    return out


def test_staircase_reads_each_block_once_per_pass(ckpt, prompts):
    loaded = blockcert.load_model(ckpt, stream=True)
    traces = capture(loaded, prompts, batch_size=2)
    s = loaded.streamed
    before = s.reads
    task = BlockTask(loaded, traces, (1, 2, 3), n_ctx=72, batch_size=2)
    events = []
    certify_blocks(task, events.append)
    assert s.reads - before == 3 + 2  # blocks 1, 2, 3 once each (extraction included), final norm and head
    kinds = [(type(e).__name__, getattr(e, "index", getattr(e, "block", None))) for e in events]
    assert kinds == [("Extraction", 1), ("PassStep", 1), ("Extraction", 2), ("PassStep", 2), ("Extraction", 3), ("PassStep", 3),
                     ("Coverage", 1), ("Coverage", 2), ("Coverage", 3)]


def test_plan_groups():
    assert plan_groups([0, 5, 10, 15, 20], per_pass=100, workers=1) == [(0, 5, 10, 15, 20)]
    assert plan_groups([0, 5, 10, 15, 20], per_pass=2, workers=1) == [(0, 5), (10, 15), (20,)]
    assert plan_groups([0, 5, 10, 15, 20], per_pass=100, workers=None) == [(0,), (5,), (10,), (15,), (20,)]
    assert plan_groups([0, 5, 10, 15, 20], per_pass=100, workers=2) == [(0, 10, 20), (5, 15)]
    assert plan_groups([0, 5, 10, 15, 20], per_pass=1, workers=2) == [(0,), (5,), (10,), (15,), (20,)]


# --- whole runs: --stream, passes, executors ---------------------------------------------------------


@pytest.fixture(scope="module")
def memory_run(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "memory"
    run(ckpt, prompts=str(ckpt / PROMPTS_FILE), blocks="0,2,3", out=out, batch_size=2, bounds=True)
    stitch(out, model=str(ckpt))
    return out


def test_stream_run_is_byte_identical(ckpt, memory_run, tmp_path):
    out = tmp_path / "streamed"
    run(ckpt, prompts=str(ckpt / PROMPTS_FILE), blocks="0,2,3", out=out, batch_size=2, bounds=True, stream=True)
    stitch(out, model=str(ckpt), stream=True)
    assert _same_tree(memory_run, out) == []
    report = verify(out, level="full", model=str(ckpt), stream=True)
    assert report.ok, [(c.path, ch.name) for c in report.certificates for ch in c.checks if not ch.ok]


def test_one_block_per_pass_is_byte_identical(ckpt, memory_run, tmp_path):
    """Blocks certified in separate passes (a small --inflight-mb) give the same bytes as one pass."""
    out = tmp_path / "passes"
    run(ckpt, prompts=str(ckpt / PROMPTS_FILE), blocks="0,2,3", out=out, batch_size=2, bounds=True, stream=True, inflight_bytes=1)
    stitch(out, model=str(ckpt), stream=True)
    assert _same_tree(memory_run, out) == []


def test_run_resumes_with_or_without_stream(ckpt, memory_run, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(memory_run, out)
    shutil.rmtree(out / "full")
    (out / "block_002" / "certificate.json").unlink()
    result = run(ckpt, prompts=str(ckpt / PROMPTS_FILE), blocks="0,2,3", out=out, batch_size=2, bounds=True, stream=True, resume=True)
    assert [b.resumed for b in result.blocks] == [True, False, True]
    assert filecmp.cmp(out / "block_002" / "certificate.json", memory_run / "block_002" / "certificate.json", shallow=False)


def test_executor_errors(ckpt):
    with pytest.raises(UserError, match="unknown --executor"):
        get_executor("slurm")
    with pytest.raises(UserError, match="go with --executor ray"):
        get_executor("local", workers=3)
    assert isinstance(get_executor("local"), LocalExecutor)
    loaded = blockcert.wrap_model(blockcert.load_model(ckpt).model)
    from blockcert.pipeline.executors import model_ref

    with pytest.raises(UserError, match="cannot load it"):
        model_ref(loaded)


@pytest.mark.slow
def test_ray_executor_equals_local(ckpt, memory_run, tmp_path):
    """Skipped without Ray, unless BLOCKCERT_REQUIRE_RAY=1 (CI installs the `ray` extra and sets it)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("BLOCKCERT_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed but BLOCKCERT_REQUIRE_RAY=1: pip install -e '.[ray]'")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    from blockcert.pipeline.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    try:
        out = tmp_path / "ray"
        run(ckpt, prompts=str(ckpt / PROMPTS_FILE), blocks="0,2,3", out=out, batch_size=2, bounds=True, stream=True,
            executor=RayExecutor(workers=2))
    finally:
        ray.shutdown()
    stitch(out, model=str(ckpt))
    assert _same_tree(memory_run, out) == []
    # made on Ray workers (one thread each, the default --cpus-per-task), verified here with two threads
    report = verify(out)
    assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]


def test_slices_carry_only_the_certified_layers(ckpt, prompts):
    loaded = blockcert.load_model(ckpt)
    traces = capture(loaded, prompts[:2])
    sliced = slice_traces(traces, [1, 3])
    assert sorted(sliced[0].residual) == [1, 2, 3, 4] and sorted(sliced[0].masks) == [1, 3]
    full_ex, full_out = extract_block(loaded, traces, 3, 72)
    part_ex, part_out = extract_block(loaded, sliced, 3, 72)
    assert all(np.array_equal(a, b) for a, b in zip(full_out, part_out))
    assert all(np.array_equal(a, b) for a, b in zip(full_ex.errors, part_ex.errors))


@pytest.mark.slow
def test_cli_synth_and_stream_run(tmp_path):
    code = (
        "import sys; from blockcert.cli import main\n"
        f"main(['synth', '--shape', 'tiny', '--layers', '2', '--out', {str(tmp_path / 'm')!r}, '--prompts', '2',"
        " '--prompt-tokens', '70', '--shard-size', '1MB'])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    assert len(list((tmp_path / "m").glob("model-*-of-*.safetensors"))) > 1
    code = (
        "from blockcert.cli import main\n"
        f"main(['run', '--model', {str(tmp_path / 'm')!r}, '--prompts', {str(tmp_path / 'm' / PROMPTS_FILE)!r}, '--stream',"
        f" '--blocks', '1', '--out', {str(tmp_path / 'out')!r}, '--json'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["blocks"][0]["index"] == 1
    bad = subprocess.run([sys.executable, "-c", code.replace("'--stream'", "'--executor', 'slurm'")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "unknown --executor" in bad.stderr


def test_stitch_holds_one_ir_at_a_time(ckpt, memory_run, tmp_path, monkeypatch):
    """stitch reads each stitched block's IR once, when its block-major pass reaches it, and drops the
    previous one first: a stitched Llama-2-7B holds one 0.8 GB IR, not 32. Same numbers as before."""
    import gc
    import shutil
    import weakref

    import blockcert.pipeline.stitch as stitch_module

    out = tmp_path / "copy"
    shutil.copytree(memory_run, out)
    loaded_irs: list[weakref.ref] = []
    real_load = stitch_module.load_ir

    def load_ir(stem):
        assert all(r() is None for r in loaded_irs), "an earlier IR is still alive when the next one is read"
        ir = real_load(stem)
        loaded_irs.append(weakref.ref(ir))
        return ir

    monkeypatch.setattr(stitch_module, "load_ir", load_ir)
    enabled = gc.isenabled()
    gc.disable()  # freed by reference counting, not by a lucky collection
    try:
        stitch(out, model=str(ckpt), stream=True)
    finally:
        if enabled:
            gc.enable()
    assert len(loaded_irs) == 3  # blocks 0, 2, 3: each read once
    assert _same_tree(memory_run, out) == []
