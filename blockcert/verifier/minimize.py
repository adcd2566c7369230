"""A ``blockcert minimize`` directory: every run under ``runs/`` is verified as an ordinary run (its surrogate
re-derived from the base IR and the masks in its spec, and re-measured), and each search log is tied to its
certificate. The search is not redone: the log is evidence of how the masks were found, bound to the
certificate by the SHA-256 in the certified spec (docs/minimize.md).

This module reads the spec and the log itself (hex masks, ranks); it imports nothing from the search code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import rfc8785

from blockcert.artifacts.layout import CERTIFICATE
from blockcert.artifacts.safeio import read_artifact, strict_json
from blockcert.verifier.checks import Checker, guard
from blockcert.verifier.subjects import CertReport

SUMMARY = "minimize.json"
MAX_LOG_BYTES = 256 << 20


def is_minimize_dir(path: Path) -> bool:
    return path.is_dir() and (path / SUMMARY).is_file() and (path / "runs").is_dir()


def run_dirs(root: Path, kind: str = "runs") -> list[Path]:
    """The run directories under ``runs/`` (each with a search log) or ``heldout/`` (the same surrogates, other prompts)."""
    if not (root / kind).is_dir():
        return []
    return sorted(p for p in (root / kind).iterdir() if p.is_dir() and p.name.startswith("block_"))


def _spec_params(spec: str) -> dict[str, str]:
    name, _, rest = spec.partition(":")
    if name != "minimize":
        raise ValueError(f"not a minimize spec: {name!r}")
    return dict(item.split("=", 1) for item in rest.split(","))


def _json(root: Path, rel: str) -> tuple[bytes, Any]:
    data = read_artifact(root, rel, MAX_LOG_BYTES)
    return data, strict_json(data, rel)


def _ranks(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split(":", 1) for item in text.split("+"))}


def verify_search(root: Path, run: Path) -> CertReport:
    """The search log of the block certified in ``run`` is the one its spec names, and it ends in the certified masks."""
    c = Checker()
    rel = f"search/{run.name}.json"
    block = claimed = None
    with guard(c, rel):
        certs = sorted(run.glob(f"block_*/{CERTIFICATE}"))
        c.require("one block certificate in the run", len(certs) == 1, 1, len(certs))
        _, cert = _json(root, certs[0].relative_to(root).as_posix())
        pred = cert["predicate"]
        block, claimed = pred["block"]["index"], pred["verdict"]["certified"]
        sur = pred["surrogate"]
        c.require("the certificate is a minimize surrogate's", isinstance(sur, dict) and str(sur.get("spec", "")).startswith("minimize:"),
                  "minimize:...", "" if not isinstance(sur, dict) else str(sur.get("spec"))[:40])
        params = _spec_params(sur["spec"])
        c.require("search log present", (root / rel).is_file(), rel, "missing")
        data, log = _json(root, rel)
        c.require("search log is canonical JSON (RFC 8785)", rfc8785.dumps(log) == data)
        digest = hashlib.sha256(data).hexdigest()
        c.require("search log SHA-256 = the spec's log", digest == params["log"], params["log"][:16], digest[:16],
                  f"{rel} is not the log the certificate names")
        c.require("search log block", log["block"] == block, block, log["block"])
        c.require("search log base IR = the certificate's", log["base_ir_tensors_sha256"] == sur["base_ir_tensors_sha256"],
                  str(sur["base_ir_tensors_sha256"])[:16], str(log["base_ir_tensors_sha256"])[:16])
        c.require("search log score method = the spec's", log["score"]["method"] == params["score"], params["score"], log["score"]["method"])
        c.require("search log policy = the certificate's", log["policy"] == pred["policy"], "", "",
                  "" if log["policy"] == pred["policy"] else f"log {log['policy']} vs certificate {pred['policy']}")
        final = log["final"]
        same = final["heads"] == params["heads"] and final["neurons"] == params["neurons"] and final["rank"] == _ranks(params["rank"])
        c.require("search log ends in the certified masks", same, "", "", "" if same else "the final candidate differs from the spec")
        steps = [e["step"] for e in log["candidates"]]
        c.record("search log steps numbered 0..n-1", steps == list(range(len(steps))), len(steps), steps[-1] + 1 if steps else 0)
        tried = [e for e in log["candidates"] if (e["heads"], e["neurons"], e["rank"]) == (final["heads"], final["neurons"], final["rank"])]
        c.record("the certified masks were measured in the search", bool(tried), "", len(tried))
        if tried:
            c.record("search verdict = certificate verdict", tried[0]["certified"] == claimed, claimed, tried[0]["certified"])
        _, summary = _json(root, SUMMARY)
        listed = [b for b in summary["blocks"] if b["block"] == block]
        c.record(f"{SUMMARY} lists the block with this log", len(listed) == 1 and listed[0]["search_log_sha256"] == digest,
                 digest[:16], listed[0]["search_log_sha256"][:16] if listed else "not listed")
    return CertReport(rel, "minimize-search", block, claimed, None, tuple(c.checks))
