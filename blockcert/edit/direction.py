"""Refusal directions (Arditi et al., 2024): a unit vector of the residual stream, as a hashed artifact.

``blockcert direction --corpus builtin:refusal --layer ℓ --out D`` computes

    r = normalise( mean_{refuse prompts} x^(ℓ)[last] − mean_{answer prompts} x^(ℓ)[last] )

where ``x^(ℓ)`` is the residual stream at the *input* of block ℓ (``x^(0)`` is the embedding output; ``ℓ = L`` is
the final hidden state before the final norm) and ``[last]`` is the last token of the prompt as the model sees
it before it generates: the prompt run through the chat template with the generation prompt appended (for
the SmolLM2 and Qwen templates, the newline after ``<|im_start|>assistant``), or the raw prompt's last token
with ``--no-chat-template``. The means are taken in float64 over each label's prompts (batches of 16,
right-padded, which causal attention makes exact). "refuse" prompts are the ones a model should decline,
"answer" prompts the benign ones, so r points from harmless towards harmful, as in the paper.

The artifact is a directory::

    D/direction.safetensors   one float32 tensor "direction" [d_model], unit norm
    D/direction.json          provenance: model identity, corpus digest, layer, position, chat template digest,
                              the norm of the difference before normalising, and the SHA-256 of direction.safetensors

:func:`load_direction` checks the digest, the shape and the norm. A user may supply their own direction as the
same two files (``direction.json`` with at least ``schema_version``, ``d_model`` and ``sha256``), or with
:func:`write_direction` from any vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts.layout import DIRECTION_META, DIRECTION_TENSOR
from blockcert.errors import UserError

DIRECTION_SCHEMA_VERSION = 1
TENSOR_NAME = "direction"
#: how far from 1 a stored direction's float32 norm may be (float32 rounding of a normalised float64 vector)
NORM_TOL = 1e-5
POSITION = "last prompt token (after the chat template's generation prompt, or the raw prompt's last token without a template)"


@attrs.frozen
class Direction:
    """A unit direction of the residual stream with its provenance (``meta``, the parsed direction.json)."""

    vector: np.ndarray = attrs.field(eq=False)  # float32 [d_model], unit norm
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return str(self.meta["sha256"])

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[0])

    def copy_to(self, out: Path) -> None:
        """Write the two files into ``out`` (an edit directory's copy), byte for byte as loaded."""
        import hashlib

        from blockcert.artifacts.digest import canonical_json
        from blockcert.artifacts.fsutil import atomic_write_bytes

        data = tensor_bytes(self.vector)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise UserError(f"direction {self.path}: its tensor does not re-serialise to the recorded digest",
                            "recompute it with `blockcert direction` (or write_direction) so that the file is canonical")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / DIRECTION_TENSOR, data)
        atomic_write_bytes(out / DIRECTION_META, canonical_json(self.meta))


def tensor_bytes(vector: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({TENSOR_NAME: np.ascontiguousarray(vector, dtype=np.float32)})


def write_direction(out: str | Path, vector: np.ndarray, provenance: dict[str, Any] | None = None, *, force: bool = False) -> Direction:
    """Normalise ``vector`` (float64), store it as float32 with its digest and ``provenance`` under ``out``."""
    import hashlib

    from blockcert.artifacts.digest import canonical_json
    from blockcert.artifacts.fsutil import atomic_write_bytes

    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise UserError("the direction is zero or not finite: there is nothing to normalise",
                        "check the corpus: both labels need prompts, and their mean activations must differ")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    if (root / DIRECTION_META).exists() and not force:
        raise UserError(f"{root / DIRECTION_META} exists", "pass --force to replace it, or another --out")
    unit = (v / norm).astype(np.float32)
    data = tensor_bytes(unit)
    meta = {"schema_version": DIRECTION_SCHEMA_VERSION, "d_model": int(unit.size), "norm_before_normalising": norm,
            **(provenance or {}), "tensor": DIRECTION_TENSOR, "sha256": hashlib.sha256(data).hexdigest()}
    root.mkdir(parents=True, exist_ok=True)
    (root / DIRECTION_META).unlink(missing_ok=True)  # the metadata is written last: never one that names a stale tensor
    atomic_write_bytes(root / DIRECTION_TENSOR, data)
    atomic_write_bytes(root / DIRECTION_META, canonical_json(meta))
    return Direction(unit, meta, root)


def load_direction(path: str | Path, d_model: int | None = None) -> Direction:
    """Read a direction directory (or its direction.json / direction.safetensors), checking the SHA-256 recorded
    in direction.json, the tensor's shape, dtype and norm, and ``d_model`` when given."""
    import hashlib

    from blockcert.artifacts.safeio import MAX_JSON_BYTES, read_artifact, read_safetensors, strict_json

    given = Path(path).expanduser()
    root = given.parent if given.name in (DIRECTION_META, DIRECTION_TENSOR) else given
    if not (root / DIRECTION_META).is_file():
        raise UserError(f"direction not found: {root / DIRECTION_META} does not exist",
                        "make one with `blockcert direction --layer N --out DIR`, then pass direction=DIR")
    meta = strict_json(read_artifact(root, DIRECTION_META, MAX_JSON_BYTES), str(root / DIRECTION_META))
    if not isinstance(meta, dict) or not {"schema_version", "d_model", "sha256"} <= set(meta):
        raise UserError(f"{root / DIRECTION_META}: expected an object with schema_version, d_model and sha256")
    if meta["schema_version"] != DIRECTION_SCHEMA_VERSION:
        raise UserError(f"{root / DIRECTION_META}: schema_version {meta['schema_version']!r} is not {DIRECTION_SCHEMA_VERSION}")
    if not (root / DIRECTION_TENSOR).is_file():
        raise UserError(f"{root / DIRECTION_TENSOR} is missing (direction.json names it)")
    data = (root / DIRECTION_TENSOR).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise UserError(f"{root / DIRECTION_TENSOR}: SHA-256 {digest[:16]}… is not the {str(meta['sha256'])[:16]}… recorded in "
                        "direction.json", "the tensor was changed after it was made; recompute it with `blockcert direction`")
    tensors = read_safetensors(data, str(root / DIRECTION_TENSOR))
    vec = tensors.get(TENSOR_NAME)
    if set(tensors) != {TENSOR_NAME} or vec is None or vec.ndim != 1 or vec.dtype != np.float32:
        raise UserError(f"{root / DIRECTION_TENSOR}: expected exactly one float32 vector named {TENSOR_NAME!r}")
    if vec.size != meta["d_model"]:
        raise UserError(f"{root / DIRECTION_TENSOR}: {vec.size} entries, but direction.json says d_model = {meta['d_model']}")
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if not np.isfinite(norm) or abs(norm - 1.0) > NORM_TOL:
        raise UserError(f"{root / DIRECTION_TENSOR}: norm {norm:.6g}, not a unit vector", "store the direction normalised")
    if d_model is not None and vec.size != d_model:
        raise UserError(f"direction {root}: d_model {vec.size} does not match the model's {d_model}",
                        "the direction was made for another model; recompute it for this one")
    return Direction(vec, meta, root)


def last_token_states(loaded: Any, texts: Sequence[str], layer: int, batch_size: int = 16) -> np.ndarray:
    """x^(layer)[last token] of each text (tokenised without adding special tokens: the chat template has them),
    float64 [n, d]. Batches are right-padded: under causal attention a real token never sees a later pad."""
    import torch

    from blockcert.pipeline.trace import padded_batches

    native, tok = loaded.native, loaded.tokenizer
    ids = [np.asarray(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int64) for text in texts]
    for text, a in zip(texts, ids):
        if a.size == 0:
            raise UserError(f"a prompt tokenises to nothing: {text[:40]!r}")
    rows = []
    with torch.no_grad():
        for part, batch, positions in padded_batches(ids, batch_size, native.device):
            x = native.embed(batch, positions)
            for index in range(layer):
                x = native.call_block(index, x, positions)
            rows.extend(x[b, a.size - 1].double().cpu().numpy() for b, a in enumerate(part))
    return np.stack(rows)


def compute_direction(loaded: Any, *, layer: int, corpus: str = "builtin:refusal", chat_template: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """The difference of means (refuse − answer) at ``x^(layer)[last prompt token]``, not normalised, and its
    provenance record (see the module doc)."""
    from blockcert.artifacts.digest import json_sha256
    from blockcert.edit.certify import Decoding, prompt_texts
    from blockcert.edit.refusal import corpus_sha256, load_corpus

    n = loaded.native.n_blocks
    if not 0 <= layer <= n:
        raise UserError(f"--layer {layer} does not exist: the residual stream has layers 0-{n} (x^(0) is the embedding, x^({n}) "
                        "the last block's output)")
    items, desc = load_corpus(corpus)
    refuse = [i for i in items if i.label == "refuse"]
    answer = [i for i in items if i.label == "answer"]
    if not refuse or not answer:
        raise UserError(f"corpus {desc}: a direction needs prompts of both labels (refuse: {len(refuse)}, answer: {len(answer)})")
    decoding = Decoding(chat_template=chat_template)
    states = {label: last_token_states(loaded, prompt_texts(loaded, group, decoding), layer) for label, group in
              (("refuse", refuse), ("answer", answer))}
    diff = states["refuse"].mean(axis=0) - states["answer"].mean(axis=0)
    unit = diff / np.linalg.norm(diff) if np.linalg.norm(diff) > 0 else diff
    proj = {label: states[label] @ unit for label in states}  # each prompt's coordinate along r (in-sample)
    pooled = float(np.sqrt((proj["refuse"].var(ddof=1) + proj["answer"].var(ddof=1)) / 2)) if min(len(refuse), len(answer)) > 1 else 0.0
    template = getattr(loaded.tokenizer, "chat_template", None) if chat_template else None
    provenance = {
        "model": {"name": loaded.name, "arch": loaded.arch, "dtype": loaded.dtype, "weights_sha256": loaded.weights_sha256()},
        "corpus": {"description": desc, "sha256": corpus_sha256(items), "refuse": len(refuse), "answer": len(answer)},
        "layer": int(layer), "position": POSITION, "chat_template": bool(chat_template),
        "chat_template_sha256": json_sha256(template) if template else None,
        "method": "difference of means, refuse − answer, float64, then normalised to unit norm",
        "projection": {"refuse_mean": float(proj["refuse"].mean()), "answer_mean": float(proj["answer"].mean()),
                       "pooled_std": pooled, "separation": float((proj["refuse"].mean() - proj["answer"].mean()) / pooled) if pooled > 0 else None,
                       "note": "in-sample: the prompts the direction was computed from, so optimistic"},
    }
    return diff, provenance


def make_direction(loaded: Any, *, layer: int, out: str | Path, corpus: str = "builtin:refusal", chat_template: bool = True,
                   force: bool = False) -> Direction:
    """:func:`compute_direction` and :func:`write_direction` in one step (``blockcert direction``)."""
    diff, provenance = compute_direction(loaded, layer=layer, corpus=corpus, chat_template=chat_template)
    return write_direction(out, diff, provenance, force=force)


def recompute_matches(loaded: Any, direction: Direction, corpus: str | None = None) -> tuple[bool, float]:
    """Recompute a direction from its recorded corpus and layer (or ``corpus``); return (the stored float32 tensor is
    bit-identical to the recomputed one, the cosine between them)."""
    meta = direction.meta
    for key in ("layer", "corpus", "chat_template"):
        if key not in meta:
            raise UserError(f"direction {direction.path}: no {key!r} in direction.json, so it cannot be recomputed",
                            "a user-supplied direction has no corpus provenance")
    diff, _ = compute_direction(loaded, layer=int(meta["layer"]), corpus=corpus or meta["corpus"]["description"],
                                chat_template=bool(meta["chat_template"]))
    unit = (diff / np.linalg.norm(diff)).astype(np.float32)
    cos = float(np.dot(unit.astype(np.float64), direction.vector.astype(np.float64)))
    return bool(np.array_equal(unit, direction.vector)), cos
