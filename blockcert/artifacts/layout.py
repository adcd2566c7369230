"""The run directory and the edit directory, laid out in one place: every path a writer, a reader or the
verifier uses. Paths are relative POSIX strings (a certificate names its subjects by them); :class:`RunDir`
joins them to a root.

::

    run.json                  MANIFEST        what every certificate shares (records.RunManifest)
    metrics.json              SUMMARY         the run summary
    traces/index.json         TRACE_INDEX     the prompts and their trace files
    traces/prompt_<k>.safetensors             prompt_file(k)
    block_<idx>/              block_dir(i)    ir.json + ir.safetensors, base_ir.* (a derivation), errors.safetensors,
                                              metrics.json, bounds.json (with --bounds), certificate.json (last)
    full/eval.json, full/certificate.json     the stitched evaluation and the full-model certificate

An edit directory: ``edit.json``, ``completions.jsonl``, ``metrics.json``, ``human.json``, ``labels/``,
``certificate.json`` (written last).

Beside any certificate, ``blockcert sign`` writes its DSSE envelope (``certificate.dsse.json``: :func:`envelope_name`);
no certificate covers an envelope, the verifier checks it against the certificate's bytes. A run made with
``--model-signature`` keeps a copy of that OpenSSF model-signing bundle as ``model.sig`` (MODEL_SIGNATURE), a
subject of every block certificate. See docs/signing.md.
"""

from __future__ import annotations

from pathlib import Path

import attrs

MANIFEST = "run.json"
SUMMARY = "metrics.json"
TRACES = "traces"
TRACE_INDEX = f"{TRACES}/index.json"
FULL = "full"
CERTIFICATE = "certificate.json"
BLOCK_METRICS = "metrics.json"
ERRORS = "errors.safetensors"
BOUNDS = "bounds.json"
IR = "ir"
BASE_IR = "base_ir"
EVAL = "eval.json"
FULL_CERTIFICATE = f"{FULL}/{CERTIFICATE}"
FULL_EVAL = f"{FULL}/{EVAL}"
#: the edit directory
EDIT_MANIFEST = "edit.json"
COMPLETIONS = "completions.jsonl"
EDIT_METRICS = "metrics.json"
HUMAN = "human.json"
LABELS = "labels"
DIRECTION_DIR = "direction"  # an edit directory's copy of the direction a directional edit used
DIRECTION_META = "direction.json"
DIRECTION_TENSOR = "direction.safetensors"
DIRECTION_FILES = (DIRECTION_META, DIRECTION_TENSOR)
#: signatures (docs/signing.md)
ENVELOPE_SUFFIX = ".dsse.json"
ENVELOPE = f"certificate{ENVELOPE_SUFFIX}"
MODEL_SIGNATURE = "model.sig"


def envelope_name(certificate: str) -> str:
    """The DSSE envelope beside a certificate: ``block_003/certificate.json`` -> ``block_003/certificate.dsse.json``."""
    stem = certificate[: -len(".json")] if certificate.endswith(".json") else certificate
    return f"{stem}{ENVELOPE_SUFFIX}"


def block_dir(index: int) -> str:
    return f"block_{index:03d}"


def prompt_file(k: int) -> str:
    return f"{TRACES}/prompt_{k:03d}.safetensors"


@attrs.frozen
class BlockPaths:
    """Block ``index``'s files, relative to the run root."""

    index: int

    @property
    def dir(self) -> str:
        return block_dir(self.index)

    def file(self, name: str) -> str:
        return f"{self.dir}/{name}"

    @property
    def certificate(self) -> str:
        return self.file(CERTIFICATE)

    @property
    def metrics(self) -> str:
        return self.file(BLOCK_METRICS)

    @property
    def errors(self) -> str:
        return self.file(ERRORS)

    @property
    def bounds(self) -> str:
        return self.file(BOUNDS)

    @property
    def ir(self) -> str:
        """The IR's stem (``.json`` and ``.safetensors`` beside it)."""
        return self.file(IR)


@attrs.frozen
class RunDir:
    """A run directory: ``RunDir(root).block(3).certificate`` is ``block_003/certificate.json`` and
    ``RunDir(root).path(...)`` joins any of these to the root."""

    root: Path = attrs.field(converter=Path)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def block(self, index: int) -> BlockPaths:
        return BlockPaths(index)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def trace_index(self) -> Path:
        return self.root / TRACE_INDEX
