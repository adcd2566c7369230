"""The numpy reference shares no code with what it checks: a walk of its import graph, static and live.

``verify --reference numpy`` (every level, every kind of certificate) must not reach torch, transformers or
the producer's modules. Two walks, each able to fail on its own:

* static: every ``import`` statement of the verifier's modules, in function bodies too (not under
  ``if TYPE_CHECKING``), followed through the package and its plugins;
* live: block, full-model and edit certificates verified at level full with the numpy reference in a fresh
  interpreter whose import system refuses the forbidden modules, then ``sys.modules`` inspected.

Shared on purpose, and allowed: the IR and its interpreter (the IR's semantics), the file readers and
digests, the certificate's constants, the policy record, the refusal classifier (its digest is in every
edit certificate), the surrogate derivations a certificate names (re-deriving them is how the verifier
checks that the certified IR is the one the spec gives), and the plugin registry.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: producer code: what runs models or computes the numbers a certificate claims
PRODUCER = {
    "blockcert.pipeline", "blockcert.bounds", "blockcert.report",  # whole sub-packages (a prefix counts)
    "blockcert.model.load", "blockcert.model.stream", "blockcert.model.observe", "blockcert.model.equivalence", "blockcert.model.synthetic",
    "blockcert.native", "blockcert.metrics", "blockcert.edit.certify", "blockcert.verifier.torch_reference", "blockcert.verifier.bounds_exact",
}
FORBIDDEN_TOP = {"torch", "transformers"}
#: where the numpy reference path starts (the Python API; the CLI, whose package registers every command, is
#: covered by the live walk)
ENTRY = ["blockcert.verifier.core", "blockcert.verifier.edit", "blockcert.verifier.bounds", "blockcert.verifier.metrics",
         "blockcert.verifier.reference.full", "blockcert.verifier.reference.model", "blockcert.verifier.reference.bounds"]


def _forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN_TOP or any(name == p or name.startswith(p + ".") for p in PRODUCER)


def _imports(module: str) -> set[str]:
    """Every module ``module``'s source imports, anywhere but under ``if TYPE_CHECKING:``."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            for a in node.names:  # `from . import interpreter` imports a module
                if importlib.util.find_spec(f"{base}.{a.name}") if _is_package(base) else False:
                    out.add(f"{base}.{a.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _is_package(name: str) -> bool:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.submodule_search_locations is not None


def _walk(entries: list[str]) -> dict[str, str]:
    """module -> the module that first imported it, over everything reachable inside our packages."""
    seen: dict[str, str] = {e: "" for e in entries}
    todo = list(entries)
    ours = ("blockcert", "blockcert_")
    while todo:
        mod = todo.pop()
        if _forbidden(mod):
            continue
        for dep in _imports(mod):
            if dep in seen:
                continue
            seen[dep] = mod
            if dep.startswith(ours) and not _forbidden(dep) and importlib.util.find_spec(dep) is not None:
                todo.append(dep)
    return seen


def _chain(seen: dict[str, str], mod: str) -> str:
    path = [mod]
    while seen.get(path[-1]):
        path.append(seen[path[-1]])
    return " <- ".join(path)


def test_static_import_graph_of_the_numpy_reference_reaches_no_producer_code():
    seen = _walk(ENTRY)
    bad = sorted(m for m in seen if _forbidden(m))
    assert not bad, "the numpy reference path imports producer code:\n" + "\n".join(_chain(seen, m) for m in bad)
    assert "blockcert.interpreter" in seen and "blockcert.verifier.reference.model" in seen  # the walk does reach the reference


def test_the_static_walk_finds_a_forbidden_import():
    """The walker itself: from the CLI package (every command) it reaches the pipeline and the model loader, through
    imports inside function bodies."""
    seen = _walk(["blockcert.cli"])
    assert "blockcert.pipeline.certify" in seen and "blockcert.model.load" in seen


LIVE = textwrap.dedent("""
    import importlib.abc, json, sys
    FORBIDDEN_TOP, PRODUCER = set(json.loads(sys.argv[1])), set(json.loads(sys.argv[2]))
    attempts = []

    def bad(name):
        return name.split(".")[0] in FORBIDDEN_TOP or any(name == p or name.startswith(p + ".") for p in PRODUCER)

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if bad(name):
                attempts.append(name)
                raise ImportError(f"the numpy reference may not import {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    from blockcert.verifier.core import verify
    reports = []
    for path, level, model in json.loads(sys.argv[3]):
        r = verify(path, level=level, reference="numpy", model=model)
        reports.append([path, r.ok, [f"{c.path}: {ch.name}: {ch.detail}" for c in r.certificates for ch in c.checks if not ch.ok][:5]])
    from blockcert.cli import main
    path, level, model = json.loads(sys.argv[3])[0]
    try:
        main(["verify", path, "--level", level, "--reference", "numpy", "--model", model])
        code = 0
    except SystemExit as exc:
        code = exc.code
    reports.append(["cli " + path, code == 0, [f"exit {code}"] if code else []])
    loaded = sorted(m for m in sys.modules if bad(m))
    print(json.dumps({"reports": reports, "attempts": attempts, "loaded": loaded}))
""")


@pytest.fixture(scope="module")
def numpy_runs(tmp_path_factory, byte_tokenizer):
    """A small random-init Llama run (two blocks, one a surrogate) with a full-model certificate and bounds,
    and an edit certificate, all made by the producer with torch."""
    from test_run import make_model_dir

    from blockcert.pipeline.certify import run
    from blockcert.pipeline.stitch import stitch

    base = tmp_path_factory.mktemp("numpy-path")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3)
    run(model=str(model), prompts="builtin:stress", blocks="all", out=base / "run", bounds=True, surrogate="lowrank:r=8")
    stitch(base / "run", model=str(model))
    from blockcert.edit.certify import Decoding, certify_edit

    certify_edit(model=str(model), spec="mlp-scale:block=1,alpha=0.5", out=base / "edit", decoding=Decoding(max_new_tokens=4))
    return base, model


def test_live_numpy_verification_imports_no_producer_code(numpy_runs):
    base, model = numpy_runs
    jobs = [[str(base / "run"), "full", str(model)], [str(base / "edit"), "replay", str(model)]]
    proc = subprocess.run([sys.executable, "-c", LIVE, json.dumps(sorted(FORBIDDEN_TOP)), json.dumps(sorted(PRODUCER)), json.dumps(jobs)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [] and out["loaded"] == [], out
    for path, ok, failures in out["reports"]:
        assert ok, (path, failures)


def test_stream_with_the_numpy_reference_is_a_usage_error(numpy_runs):
    """The numpy reference holds the whole model: asked to stream, it says so instead of running out of memory."""
    from blockcert.errors import UserError
    from blockcert.verifier.core import verify

    base, model = numpy_runs
    with pytest.raises(UserError, match="--stream"):
        verify(base / "run", level="full", reference="numpy", model=str(model), stream=True)
