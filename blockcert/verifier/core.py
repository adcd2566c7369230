"""The third-party verifier: re-derive every claim of a run's certificates from the artifacts alone.

Levels (each includes the one before):

* ``hashes``: strict JSON, canonical bytes, statement type and schema, every subject's path and digest,
  the required artifacts present and no unreferenced ones, cross-references (metrics, IR, trace index).
* ``replay``: replays every IR on its recorded traces (torch float32, or numpy float64 with
  ``reference="numpy"``, which never imports torch), recomputes e(p,t), eps, MAE, cov_act, cov_path,
  cov_loss (from the stored per-token losses), and the verdict under the verifier's policy.
* ``full``: also loads the model, checks its weights digest, re-captures the traces and re-runs the
  suffixes to re-derive the stitched losses and cov_loss. With ``reference="numpy"`` the model is the
  verifier's own float64 numpy forward (:mod:`blockcert.verifier.reference`), which shares no code with the producer.

The verifier's policy comes from its caller, never from the certificate: a certificate whose thresholds
are looser than the verifier's fails, and a claimed ``certified: true`` must hold under the verifier's
policy. Unknown fields are errors. Each check reports claimed vs recomputed.

The checks live in :mod:`.subjects` (a statement and its artifacts), :mod:`.blocks` (block certificates and the
run summary), :mod:`.full_model` and :mod:`.signatures` (the DSSE envelopes beside the certificates, required with
``trust``); this module is the entry point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts.layout import CERTIFICATE, FULL_CERTIFICATE, MANIFEST
from blockcert.errors import UserError
from blockcert.policy import Policy
from blockcert.verifier.backends import REFERENCES, backend
from blockcert.verifier.blocks import verify_certificate, verify_summary
from blockcert.verifier.checks import Check
from blockcert.verifier.full_model import verify_full_model
from blockcert.verifier.metrics import (
    Tolerances,
)
from blockcert.verifier.signatures import attach, load_trusted
from blockcert.verifier.subjects import CertReport

LEVELS = ("hashes", "replay", "full")


@attrs.frozen
class VerifyReport:
    root: str
    level: str
    reference: str
    policy: Policy
    tolerances: Tolerances
    certificates: tuple[CertReport, ...]
    trusted: tuple[str, ...] | None = None  # ids of the --trust keys; None: signatures reported, not required

    @property
    def ok(self) -> bool:
        return bool(self.certificates) and all(c.ok for c in self.certificates)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"ok": self.ok}


def find_certificates(path: Path) -> tuple[Path, list[str]]:
    """(run directory, certificate paths relative to it) for a run directory or one certificate file."""
    path = Path(path)
    if path.is_dir():
        certs = sorted(p.relative_to(path).as_posix() for p in path.glob(f"block_*/{CERTIFICATE}"))
        if not certs:
            raise UserError(f"{path} holds no block_*/certificate.json", "pass a blockcert run directory or a certificate file")
        return path, certs
    if path.is_file() and path.name.endswith(".json"):
        root = path.parent.parent
        return root, [path.relative_to(root).as_posix()]
    raise UserError(f"{path} is neither a run directory nor a certificate file")


def recorded_rule(root: Path) -> Policy:
    """The paper's numbers under the coverage rule the run at ``root`` names in its run.json (the paper's when it
    names none, or cannot be read): how ``report`` and ``bound``, which check a run's consistency at level
    hashes, judge a noise-floor or relative run by its own rule without loosening any number."""
    try:
        name = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))["policy"].get("name", "paper")
        return Policy(name=name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Policy()


def verify(path: str | Path, *, level: str = "replay", reference: str = "torch", policy: Policy | None = None,
           tolerances: Tolerances | None = None, model: str | None = None, progress: Callable[[str], None] | None = None,
           stream: bool = False, device: str = "cpu", trust: Sequence[str | Path] | None = None) -> VerifyReport:
    """Verify every certificate under ``path`` (a run directory) or one certificate file.

    ``trust``: public key files (PEM); every certificate must then carry a DSSE envelope with a valid signature by
    one of them (:mod:`.signatures`). Without it, envelopes that are there are checked and their key ids reported.

    ``stream=True``: at level full, load ``model`` block by block (:mod:`blockcert.model.stream`).
    ``device``: where the torch reference runs the model (levels replay of an edit, and full); the replay of
    the IR and the numpy reference always run on the CPU."""
    if level not in LEVELS:
        raise UserError(f"unknown --level {level!r}", f"choose one of {', '.join(LEVELS)}")
    if reference not in REFERENCES:
        raise UserError(f"unknown --reference {reference!r}", f"choose one of {', '.join(REFERENCES)}")
    policy = policy or Policy()
    tol = tolerances or Tolerances.for_reference(reference)
    if trust is not None and not list(trust):
        raise UserError("trust=[] would accept no signature", "pass at least one public key, or trust=None not to require signatures")
    keys = None if trust is None else load_trusted(trust)  # a bad key file fails here, before any work
    ids = None if keys is None else tuple(k.keyid for k in keys)
    from blockcert.verifier.edit import is_edit_dir, verify_edit

    target = Path(path)
    edit_root = target if is_edit_dir(target) else target.parent if target.name == CERTIFICATE and is_edit_dir(target.parent) else None
    if edit_root is not None:  # an edit certificate (blockcert edit): regenerated with the model at levels replay/full
        report = verify_edit(edit_root, level=level, model=model, reference=reference, tol=tol, device=device)
        return VerifyReport(str(edit_root), level, reference, policy, tol, attach(edit_root, (report,), keys), ids)
    from blockcert.verifier.minimize import is_minimize_dir, run_dirs, verify_search

    if is_minimize_dir(target):  # blockcert minimize: every run verified as a run, and each search log tied to its certificate
        reports = []
        for run_dir in run_dirs(target) + run_dirs(target, "heldout"):
            sub = verify(run_dir, level=level, reference=reference, policy=policy, tolerances=tolerances, model=model,
                         progress=progress, stream=stream, device=device, trust=trust)
            prefix = run_dir.relative_to(target).as_posix()
            reports += [attrs.evolve(r, path=f"{prefix}/{r.path}") for r in sub.certificates]
            if run_dir.parent.name == "runs":
                reports.append(verify_search(target, run_dir))
        if not reports:
            raise UserError(f"{target} holds no runs/block_*/ run", "pass the --out of a finished blockcert minimize")
        return VerifyReport(str(target), level, reference, policy, tol, tuple(reports), ids)
    from blockcert.verifier.sweeps import edit_dirs, is_direction_sweep, verify_results

    if is_direction_sweep(target):  # blockcert edit direction-sweep: every edit certificate, and results.json against them
        reports = []
        for edit_dir in edit_dirs(target):
            sub = verify(edit_dir, level=level, reference=reference, policy=policy, tolerances=tolerances, model=model,
                         progress=progress, device=device, trust=trust)
            reports += [attrs.evolve(r, path=f"edits/{edit_dir.name}/{r.path}") for r in sub.certificates]
            if progress is not None:
                progress(f"edits/{edit_dir.name}")
        reports.append(verify_results(target))
        return VerifyReport(str(target), level, reference, policy, tol, tuple(reports), ids)
    if level == "full" and model is None:
        raise UserError("--level full needs --model (the model the certificates claim to certify)")
    if stream and reference == "numpy":
        raise UserError("--stream reads the model block by block in torch; the numpy reference reads it whole",
                        "verify a model larger than memory with --reference torch --stream (and at --level replay with numpy)")
    root, certs = find_certificates(Path(path))
    full = backend(reference).FullCheck(root, model, tol, stream=stream, device=device) if level == "full" else None
    reports = []
    cache: dict[Any, Any] = {}
    for rel in certs:
        reports.append(verify_certificate(root, rel, level=level, reference=reference, policy=policy, tol=tol, full=full, cache=cache))
        if progress is not None:
            progress(rel)
    full_rel = FULL_CERTIFICATE
    # The block checks are done: free what only they needed (the cached traces) before the full-model
    # check, which re-evaluates the stitched model with the model already loaded.
    cache.clear()
    kwargs = {"level": level, "reference": reference, "tol": tol, "model": model, "stream": stream, "full": full, "tau_act": policy.tau_act}
    if Path(path).is_dir() and (root / full_rel).exists():
        reports.append(verify_full_model(root, full_rel, **kwargs))
    elif Path(path).is_file() and Path(path).resolve() == (root / full_rel).resolve():
        reports = [verify_full_model(root, full_rel, **kwargs)]
    if Path(path).is_dir():
        reports.append(verify_summary(root, certs))
    return VerifyReport(str(root), level, reference, policy, tol, attach(root, reports, keys), ids)


__all__: Sequence[str] = ["verify", "VerifyReport", "CertReport", "Check", "Tolerances", "LEVELS", "REFERENCES"]
