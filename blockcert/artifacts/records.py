"""The JSON artifacts of a run as records: the contract between the writers and the verifier, in one place.

Each JSON file a run writes (``run.json``, a block's ``metrics.json``, ``bounds.json``, the block, full-model
and edit predicates, an edit's ``metrics.json``) is a frozen attrs record here, ``schema_version`` first where
the artifact has one. Writers build records and :func:`dump` them; readers :func:`load` them with one strict
cattrs converter (unknown keys are errors; :func:`read` turns a mismatch into a usage error); the verifier derives the key sets it enforces from
:func:`keys`. docs/certificate.md documents every field (``tests/test_records.py`` fails on one it does
not name). A format change adds a migration (``blockcert.verifier.subjects.MIGRATIONS``) and a golden run.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from blockcert.artifacts.bounds_record import BoundSettings
from blockcert.policy import Policy

JSON = Any  # a JSON value kept as it is (a record the producer's plugins own, e.g. a derivation)


# -- shared pieces ------------------------------------------------------------------------------------------
@attrs.frozen
class Tool:
    name: str
    version: str


@attrs.frozen
class ModelIdentity:
    name: str
    arch: str
    dtype: str
    weights_sha256: str
    source_sha256: str | None
    n_blocks: int
    d_model: int


@attrs.frozen
class PromptSet:
    description: str
    count: int
    sha256: str


@attrs.frozen
class Replay:
    backend: str
    dtype: str
    interpreter_sha256: str
    device: str = "cpu"  # where the model and the replay ran (--device); schema v3


# -- run.json --------------------------------------------------------------------------------------------------
@attrs.frozen
class RunManifest:
    """``run.json``: what every certificate of the run shares. ``derivation`` only in a surrogate/ablation run."""

    tool: Tool
    model: ModelIdentity
    prompts: PromptSet
    policy: Policy
    replay: Replay
    n_ctx: int
    derivation: JSON = None


# -- a block certificate's predicate -------------------------------------------------------------------------------
@attrs.frozen
class BlockRef:
    index: int
    arch: str
    n_ctx: int
    ir: str


@attrs.frozen
class CertifiedPrompts:
    description: str
    count: int
    sha256: str
    tokens: int
    trace_index: str


@attrs.frozen
class ClaimedMetrics:
    epsilon: float
    mae: float
    cov_act: float
    cov_path: float
    cov_loss: float
    rel_max: float
    rel_mean: float
    tokens: int
    loss_tokens: int
    best_prompt: int


@attrs.frozen
class Verdict:
    certified: bool
    cov_act_ok: bool
    cov_loss_ok: bool


@attrs.frozen
class LipschitzSummary:
    bounds: str
    analytic_upper_bound: float | None
    hybrid_upper_bound: float | None
    hybrid_input_radius: float
    empirical_lower_bound: float
    epsilon_seq: float


@attrs.frozen
class BlockPredicate:
    schema_version: int
    tool: Tool
    model: ModelIdentity
    block: BlockRef
    prompts: CertifiedPrompts
    policy: Policy
    metrics: ClaimedMetrics
    verdict: Verdict
    replay: Replay
    surrogate: JSON
    lipschitz: LipschitzSummary | None


# -- a block's metrics.json -------------------------------------------------------------------------------------
@attrs.frozen
class BlockMetricsRecord:
    """``block_<idx>/metrics.json``: the claimed metrics with their per-prompt values, the verdict, the policy."""

    block: int
    metrics: dict[str, Any]
    certified: bool
    policy: Policy


# -- bounds.json ---------------------------------------------------------------------------------------------------
@attrs.frozen
class CertifiedBounds:
    upper: dict[str, float | None]
    hybrid_input_radius: float
    min_scale1: float
    min_scale2: float
    seq_len: int
    tokens: int
    residual: str
    regions: dict[str, str]
    spectral: dict[str, Any]


@attrs.frozen
class EmpiricalLowerBound:
    value: float
    prompt: int
    tokens: int
    iterations: int
    dtype: str
    label: str


@attrs.frozen
class BoundsRecord:
    """``block_<idx>/bounds.json`` (format ``blockcert-lipschitz/v1``)."""

    format: str
    block: int
    norm: str
    settings: BoundSettings
    certified: CertifiedBounds
    epsilon_seq: float
    empirical_lower_bound: EmpiricalLowerBound
    labels: dict[str, str]


# -- the full-model certificate's predicate -------------------------------------------------------------------------
@attrs.frozen
class BlockCertificateRef:
    index: int
    certificate: str
    certificate_id: str


@attrs.frozen
class FullMetrics:
    layer_mae: list[float]
    layer_max: list[float]
    mean_layer_mae: float
    worst_layer_mae: float
    max_residual_error: float
    ppl_baseline: float
    ppl_stitched: float
    delta_ppl: float
    rel_delta_ppl: float
    probe_prompts: int
    probe_stitched_vs_baseline: float
    probe_baseline_vs_human: float
    probe_stitched_vs_human: float


@attrs.frozen
class FullPredicate:
    schema_version: int
    tool: Tool
    model: ModelIdentity
    prompts: PromptSet
    stitched_blocks: list[int]
    block_certificates: list[BlockCertificateRef]
    metrics: FullMetrics
    evaluation: str
    device: str = "cpu"  # where the stitched evaluation ran (--device); full-model schema v2


# -- an edit certificate ---------------------------------------------------------------------------------------------
@attrs.frozen
class EditMetrics:
    """An edit's ``metrics.json``."""

    before: dict[str, Any]
    after: dict[str, Any]
    epsilon_edit: float
    max_final_deviation: float
    amplification: float | None
    per_prompt: list[dict[str, Any]]
    locality: dict[str, Any] | None = None  # edit schema v3: KL on neutral prompts, unchanged benign completions, ΔPPL


@attrs.frozen
class EditManifest:
    """An edit's ``edit.json``: what was done."""

    tool: Tool
    model: ModelIdentity
    edit: dict[str, Any]
    corpus: dict[str, Any]
    decoding: dict[str, Any]
    classifier: dict[str, Any]
    device: str = "cpu"  # where the completions and deviations were computed (--device); edit schema v2


@attrs.frozen
class EditPredicate:
    schema_version: int
    tool: Tool
    model: ModelIdentity
    edit: dict[str, Any]
    corpus: dict[str, Any]
    decoding: dict[str, Any]
    classifier: dict[str, Any]
    metrics: dict[str, Any]
    human_labels: dict[str, Any] | None
    completions: str
    device: str = "cpu"  # edit schema v2


RECORDS = (RunManifest, BlockPredicate, BlockMetricsRecord, BoundsRecord, FullPredicate, EditManifest, EditPredicate, EditMetrics)


def _converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    # run.json has no "derivation" key outside a surrogate/ablation run
    c.register_unstructure_hook(RunManifest, make_dict_unstructure_fn(RunManifest, c, derivation=override(omit_if_default=True)))
    c.register_structure_hook(RunManifest, make_dict_structure_fn(RunManifest, c, _cattrs_forbid_extra_keys=True))
    c.register_structure_hook(JSON, lambda v, _: v)
    return c


CONVERTER = _converter()


def dump(record: Any) -> dict[str, Any]:
    """A record as the JSON object it is written as (plain dicts and lists; canonical bytes come later)."""
    return CONVERTER.unstructure(record)


def load(cls: type, data: Any) -> Any:
    """The record ``cls`` from a parsed JSON object; an unknown or missing key, or a wrong type, raises."""
    return CONVERTER.structure(data, cls)


def read(cls: type, data: Any, what: str) -> Any:
    """:func:`load` for a file a user handed us: a mismatch is a usage error naming ``what``, not a traceback."""
    from blockcert.errors import UserError

    try:
        return load(cls, data)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else str(exc)
        raise UserError(f"{what} is not a BlockCert {cls.__name__} record: {detail}",
                        "was it written by another version of BlockCert, or edited by hand?") from None


def keys(cls: type) -> set[str]:
    """The keys of ``cls``'s JSON object: what the verifier requires, exactly."""
    return {f.name for f in attrs.fields(cls)}
