"""The worked third-party plugin (examples/blockcert-qwen2) installs, is discovered, and is exact.

The example is pip-installed into a private ``--target`` folder (never into the venv) and every check
runs in a subprocess with that folder on ``PYTHONPATH``, so this process's plugin manager is untouched.
The hooks it implements, blockcert_register_architectures, blockcert_trace and blockcert_to_ir, are
exercised end to end: detection, native tracing and IR replay against the HF block.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "blockcert-qwen2"
TOL = 1e-5

# Run in a subprocess: seeded tiny Qwen2 models (full attention, and a sliding window on block 1),
# each block converted to IR and replayed in torch float32 and numpy float64 on the native stream;
# then a config the plugin must refuse.
REPLAY_SCRIPT = r"""
import json, math
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
import blockcert

def seeded(config, seed):
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # HF's std-0.02 init makes blocks near-identity; make errors visible
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()

common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
configs = {
    "full": Qwen2Config(**common, attn_implementation="sdpa"),
    "sliding": Qwen2Config(**common, use_sliding_window=True, sliding_window=3, max_window_layers=1,
                           attn_implementation="eager"),
}
plugins = blockcert.get_plugins()
report = {"models": {}}
for label, config in configs.items():
    model = seeded(config, seed=7)
    loaded = blockcert.wrap_model(model)
    native = loaded.native
    ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    xs = native.residual_stream(ids)
    with torch.no_grad():
        logits = model(ids).logits
    blocks = []
    for i in range(native.n_blocks):
        ir = plugins.to_ir(loaded.native, i, 16)
        x_in, x_out = xs[i], xs[i + 1]
        peak = float(x_out.abs().max())
        y = plugins.replay(ir, x_in).output
        y64 = plugins.replay(ir, x_in.double().numpy()).output
        blocks.append({
            "index": i,
            "arch": ir.arch,
            "torch_dtype": str(y.dtype),
            "numpy_dtype": str(y64.dtype),
            "rel_torch": float((y - x_out).abs().max()) / peak,
            "rel_numpy": float(np.abs(y64 - x_out.double().numpy()).max()) / peak,
            "q_bias": ir.attn.q.bias is not None and ir.attn.k.bias is not None and ir.attn.v.bias is not None,
            "o_bias": ir.attn.o.bias is not None,
            "mask_is_causal": bool(np.array_equal(ir.attn.mask, np.tril(np.ones((16, 16), dtype=bool)))),
            "mask_row_15": [int(j) for j in np.flatnonzero(ir.attn.mask[15])],
        })
    report["models"][label] = {
        "arch": loaded.arch,
        "native_class": type(native).__name__,
        "layer_types": list(config.layer_types),
        "forward_rel": float((native.forward(ids) - logits).abs().max()) / float(logits.abs().max()),
        "blocks": blocks,
    }
# a sliding layer without a window: HF cannot run it either, so the plugin refuses with a UserError
broken = Qwen2Config(**common, layer_types=["full_attention", "sliding_attention"])
try:
    plugins.to_ir(blockcert.wrap_model(Qwen2ForCausalLM(broken)).native, 1, 16)
    report["refusal"] = None
except blockcert.UserError as exc:
    report["refusal"] = exc.message
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a private folder (built from a copy: no build/ in the repo)."""
    root = tmp_path_factory.mktemp("qwen2-plugin")
    source = root / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-input", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, f"pip could not install {EXAMPLE.name}:\n{pip.stderr}"
    return target


def _run(site: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BLOCKCERT_DISABLE_PLUGINS"}
    environ.update(PYTHONPATH=str(site), **env)
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environ, cwd=site.parent, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def _plugins(site: Path, **env: str) -> dict[str, dict]:
    rows = json.loads(_run(site, ["-m", "blockcert", "plugins", "--json"], **env).stdout)
    return {row["name"]: row for row in rows}


def test_plugin_is_listed(site: Path) -> None:
    rows = _plugins(site)
    assert rows["qwen2"] == {
        "name": "qwen2",
        "version": "0.1.0",
        "builtin": False,
        "module": "blockcert_qwen2",
        "hooks": ["blockcert_register_architectures", "blockcert_to_ir", "blockcert_trace"],
    }
    assert rows["llama"]["builtin"]  # the built-ins are still there


def test_plugin_module_does_not_import_torch(site: Path) -> None:
    code = "import sys, blockcert_qwen2; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert _run(site, ["-c", code]).stdout.strip() == "[]"


def test_disabled_plugin_is_not_listed(site: Path) -> None:
    rows = _plugins(site, BLOCKCERT_DISABLE_PLUGINS="qwen2")
    assert "qwen2" not in rows
    assert "llama" in rows


def test_qwen2_ir_replays_native_block(site: Path) -> None:
    report = json.loads(_run(site, ["-c", REPLAY_SCRIPT]).stdout)
    for label, model in report["models"].items():
        assert model["arch"] == "qwen2", label
        assert model["native_class"] == "Qwen2Native", label
        assert model["forward_rel"] <= TOL, f"{label}: embed -> blocks -> head differs from HF's forward"
        assert [b["index"] for b in model["blocks"]] == [0, 1]
        for block in model["blocks"]:
            where = f"{label} block {block['index']}"
            assert block["arch"] == "qwen2", where
            assert block["q_bias"] and not block["o_bias"], where
            assert block["torch_dtype"] == "torch.float32", where
            assert block["numpy_dtype"] == "float64", where
            assert block["rel_torch"] <= TOL, where
            assert block["rel_numpy"] <= TOL, where
    full, sliding = report["models"]["full"], report["models"]["sliding"]
    assert full["layer_types"] == ["full_attention", "full_attention"]
    assert all(b["mask_is_causal"] for b in full["blocks"])
    assert sliding["layer_types"] == ["full_attention", "sliding_attention"]
    first, second = sliding["blocks"]
    assert first["mask_is_causal"] and first["mask_row_15"] == list(range(16))
    assert not second["mask_is_causal"] and second["mask_row_15"] == [13, 14, 15]  # window of 3
    assert report["refusal"] == "qwen2 block 1 is a sliding_attention layer but config.sliding_window is not set"
