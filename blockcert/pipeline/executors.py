"""Where the per-block work of a run executes: in this process (``local``, the default) or on Ray.

An executor maps a task function over items (here: groups of blocks, each certified in one pass over
the model, :func:`blockcert.pipeline.certify.certify_blocks`). A task reports what it finishes through
``emit`` (an extracted block, a block of the pass done, a block's loss coverage): locally as it
happens, so the run writes each IR at once and drops it; from Ray when the task returns, so the run
writes each task's certificates as it completes. Either way the run sees the same records and writes
the same bytes, so certificates do not depend on the executor.

Ray (``pip install 'blockcert[ray]'``, ``--executor ray``, ``--ray-address`` for a cluster): each
task loads the model itself from its path (every node needs the checkpoint at that path) and checks
its weights digest against the run's; the traces a task needs travel with it through Ray's object
store. See docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from blockcert.errors import UserError

T = TypeVar("T")
R = TypeVar("R")
Emit = Callable[[Any], None]
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs ``fn(item, emit)`` for every item; results in item order."""

    name: str
    remote: bool  # tasks run in other processes: they get a ModelRef and sliced traces, not live objects
    workers: int | None  # how many groups to split the blocks into (None: the run decides)

    def map(self, fn: Callable[[T, Emit], R], items: Sequence[T], emit: Emit) -> list[R]: ...


@attrs.define
class LocalExecutor:
    """In this process, one item after the other."""

    name: str = "local"
    remote: bool = False
    workers: int | None = 1

    def map(self, fn: Callable[[T, Emit], R], items: Sequence[T], emit: Emit) -> list[R]:
        return [fn(item, emit) for item in items]


def _collect(fn: Callable[[Any, Emit], Any], item: Any) -> tuple[list[Any], Any]:
    """On a worker: run the task, keep what it emits, return both."""
    events: list[Any] = []
    result = fn(item, events.append)
    return events, result


@attrs.define
class RayExecutor:
    """One Ray task per item. ``address`` is given to ``ray.init`` (None: start Ray on this machine)."""

    address: str | None = None
    workers: int | None = None  # None: one task per block
    cpus_per_task: float = 1.0  # Ray sets OMP_NUM_THREADS (torch's threads) of a task to this, floored
    name: str = "ray"
    remote: bool = True

    def map(self, fn: Callable[[T, Emit], R], items: Sequence[T], emit: Emit) -> list[R]:
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level="error", log_to_driver=False)
        task = ray.remote(num_cpus=self.cpus_per_task)(_collect)
        refs = [task.remote(fn, item) for item in items]
        results: dict[Any, Any] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                events, results[ref] = ray.get(ref)
                for event in events:
                    emit(event)
        return [results[ref] for ref in refs]


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError("--executor ray needs Ray, which is not installed", "pip install 'ray>=2.9' (the extra named ray)") from exc
    return ray


def get_executor(name: str | Executor, *, address: str | None = None, workers: int | None = None,
                 cpus_per_task: float | None = None) -> Executor:
    """An executor by name (``local``, ``ray``), or the one given."""
    if not isinstance(name, str):
        return name
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if cpus_per_task is not None and cpus_per_task <= 0:
        raise UserError(f"--cpus-per-task must be > 0, got {cpus_per_task}")
    if name == "local":
        if address is not None or workers not in (None, 1) or cpus_per_task is not None:
            raise UserError("--ray-address, --workers and --cpus-per-task go with --executor ray")
        return LocalExecutor()
    if name == "ray":
        import_ray()  # fail before anything is computed
        return RayExecutor(address=address, workers=workers, cpus_per_task=cpus_per_task or 1.0)
    raise UserError(f"unknown --executor {name!r}", f"choose one of: {', '.join(EXECUTORS)}")


# ---------------------------------------------------------------------------------------------------
# The model, as a worker process finds it
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class ModelRef:
    """How a worker loads the run's model: ``load_model(spec, arch=, dtype=, stream=, device=)``, then checks its digest."""

    spec: str
    arch: str
    dtype: str
    stream: bool
    weights_sha256: str
    device: str = "cpu"


_LOADED: dict[ModelRef, Any] = {}  # per worker process: a worker that runs several tasks loads once


def model_ref(loaded: Any) -> ModelRef:
    if loaded.spec is None:
        raise UserError(f"model {loaded.name} was wrapped in memory, so another process cannot load it",
                        "use --executor local, or load the model by path (blockcert.load_model)")
    return ModelRef(loaded.spec, loaded.arch, loaded.dtype, loaded.streamed is not None, loaded.weights_sha256(), loaded.device)


def resolve_model(model: Any) -> Any:
    """A :class:`ModelRef` loaded (once per process) and checked; a loaded model as it is."""
    if not isinstance(model, ModelRef):
        return model
    if model not in _LOADED:
        from blockcert.model.load import load_model

        loaded = load_model(model.spec, arch=model.arch, dtype=model.dtype, stream=model.stream, device=model.device)
        if loaded.weights_sha256() != model.weights_sha256:
            raise UserError(f"the model at {model.spec} on this worker is not the run's model (weights digest differs)",
                            "every node needs the same checkpoint at the same path")
        _LOADED[model] = loaded
    return _LOADED[model]
