"""A forger who has our source code: rewrite any artifact, then recompute every derived file, every digest
and the run summary exactly as our own writers do, so that only the verifier's semantics can catch it.

Used by tests/test_forgery.py (named forgeries, each asserted to fail at the level that claims to catch it
and to pass the levels below) and tests/test_fuzz_verify.py (consistent random mutations).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
import torch
from safetensors.numpy import load_file, save

from blockcert.certificate import TENSOR_ANNOTATION, subject
from blockcert.artifacts.digest import canonical_json, tensors_sha256
from blockcert.ir import load_ir
from blockcert.metrics import Policy
from blockcert.pipeline.certify import Extraction, _certify, replay_all, measure_block
from blockcert.pipeline.trace import load_traces, prompt_file
from blockcert.verifier.blocks import expected_summary
from blockcert.verifier.core import find_certificates


def block_dirs(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("block_*/certificate.json"))


def redigest(root: Path, rel: str) -> None:
    """Recompute every subject digest of one certificate from the files as they now are."""
    cert = json.loads((root / rel).read_bytes())
    for s in cert["subject"]:
        path = root / s["name"]
        if path.is_file():
            s["digest"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            if s["name"].endswith(".safetensors"):
                s["annotations"][TENSOR_ANNOTATION] = tensors_sha256(load_file(path))
    (root / rel).write_bytes(rfc8785.dumps(cert))


def resummarize(root: Path) -> None:
    """Every block certificate re-digested, then the run summary rebuilt from them (as the run writes it),
    then the full-model certificate (if any) re-digested with the new block certificate ids."""
    _, certs = find_certificates(root)
    for rel in certs:
        redigest(root, rel)
    (root / "metrics.json").write_bytes(canonical_json(expected_summary(root, certs)))
    full = root / "full/certificate.json"
    if full.is_file():
        cert = json.loads(full.read_bytes())
        for ref in cert["predicate"]["block_certificates"]:
            ref["certificate_id"] = hashlib.sha256((root / ref["certificate"]).read_bytes()).hexdigest()
        full.write_bytes(rfc8785.dumps(cert))
        redigest(root, "full/certificate.json")


def recertify(root: Path, ell: int, loaded: Any, *, errors: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
              stitched: Callable[[list[np.ndarray], list[Any]], list[np.ndarray]] | None = None) -> None:
    """Block ``ell``'s per-token errors, metrics, verdict and certificate recomputed with our pipeline from
    the IR and traces now on disk (the stitched losses with the real model), optionally with the errors
    rewritten by ``errors`` and the stitched losses by ``stitched(losses, traces)`` before the metrics are
    derived from them."""
    traces = load_traces(root)
    manifest = json.loads((root / "run.json").read_text())
    ir = load_ir(root / f"block_{ell:03d}" / "ir")
    _, errs, norms, paths = replay_all(ir, traces, ell)
    if errors is not None:
        errs = errors(errs)
    losses = measure_block(loaded, traces, ir, ell, batch_size=8).stitched
    if stitched is not None:
        losses = stitched(losses, traces)
    ex = Extraction(ell, ir.arch, ir.n_ctx, None, None, None, errs, norms, paths, None)
    shared = [subject(root, "run.json"), subject(root, "traces/index.json"), *(subject(root, prompt_file(t.index)) for t in traces)]
    _certify(root, ex, losses, traces, Policy(**manifest["policy"]), shared, manifest)


def recertify_all(root: Path, loaded: Any, **kw: Any) -> None:
    for d in block_dirs(root):
        recertify(root, int(d.removeprefix("block_")), loaded, **kw)
    resummarize(root)


def edit_traces(root: Path, fn: Callable[[int, dict[str, np.ndarray]], None]) -> None:
    """Rewrite every trace file with ``fn(prompt index, tensors)`` (in place)."""
    index = json.loads((root / "traces/index.json").read_text())
    for e in index["entries"]:
        path = root / e["file"]
        tensors = {k: np.array(v) for k, v in load_file(path).items()}
        fn(e["index"], tensors)
        path.write_bytes(save(tensors, metadata={"format": "blockcert-trace"}))


def replay_into_trace(root: Path, ell: int, ir_stem: Path, loaded: Any) -> None:
    """x^(ell+1) := the given IR's replay of x^(ell) in every trace, and the native suffix x^(ell+2..L) and
    the baseline losses re-run from it with the real model: a trace in which that IR is exact."""
    from blockcert.interpreter import replay
    from blockcert.pipeline.trace import prompt_nll

    ir = load_ir(ir_stem)
    native = loaded.native

    def forge(_: int, t: dict[str, np.ndarray]) -> None:
        res = t["residual"]
        with torch.no_grad():
            x = replay(ir, torch.from_numpy(res[ell])[None]).output
            res[ell + 1] = x[0].numpy()
            pos = torch.arange(res.shape[1])[None]
            for j in range(ell + 1, native.n_blocks):
                x = native.call_block(j, x.to(native.dtype), pos).float()
                res[j + 1] = x[0].numpy()
            ids = torch.from_numpy(t["input_ids"])[None]
            t["loss"] = prompt_nll(native, x, ids, [ids.shape[1]])[0].astype(np.float32)

    edit_traces(root, forge)


def edit_json(path: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_bytes())
    fn(obj)
    path.write_bytes(rfc8785.dumps(obj))
