"""BlockCert: certified blockwise extraction of transformer mechanisms.

``import blockcert`` is cheap and never imports torch or transformers; the API below is loaded lazily.

>>> import blockcert
>>> result = blockcert.run(blocks="0,15,29", out="blockcert-out")   # certify blocks -> RunResult
>>> m = blockcert.load_model()                       # the default model (SmolLM2-135M-Instruct)
>>> ir = blockcert.to_ir(m, 3)                       # block 3 as an explicit IR
>>> blockcert.save_ir(ir, "block_3/ir"); ir2 = blockcert.load_ir("block_3/ir")
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from blockcert.errors import UserError
from blockcert.hookspecs import hookimpl
from blockcert.ir import SCHEMA_VERSION, BlockIR, load_ir, save_ir

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("blockcert.model.load", "load_model"),
    "wrap_model": ("blockcert.model.load", "wrap_model"),
    "LoadedModel": ("blockcert.model.load", "LoadedModel"),
    "replay": ("blockcert.interpreter", "replay"),
    "Replay": ("blockcert.interpreter", "Replay"),
    "get_plugins": ("blockcert.plugins", "get_plugins"),
    "check_blocks": ("blockcert.model.equivalence", "check_blocks"),
    "run": ("blockcert.pipeline.certify", "run"),
    "RunResult": ("blockcert.pipeline.certify", "RunResult"),
    "RunSettings": ("blockcert.pipeline.certify", "RunSettings"),
    "BlockResult": ("blockcert.pipeline.certify", "BlockResult"),
    "Policy": ("blockcert.policy", "Policy"),
    "BlockMetrics": ("blockcert.metrics", "BlockMetrics"),
    "parse_spec": ("blockcert.spec", "parse_spec"),
    "stitch": ("blockcert.pipeline.stitch", "stitch"),
    "bound": ("blockcert.bounds.compose", "bound"),
    "BoundReport": ("blockcert.bounds.compose", "BoundReport"),
    "BoundSettings": ("blockcert.bounds.record", "BoundSettings"),
    "verify": ("blockcert.verifier.core", "verify"),
}

if _typing.TYPE_CHECKING:
    from blockcert.bounds.compose import BoundReport, bound
    from blockcert.bounds.record import BoundSettings
    from blockcert.interpreter import Replay, replay
    from blockcert.metrics import BlockMetrics
    from blockcert.model.equivalence import check_blocks
    from blockcert.model.load import LoadedModel, load_model, wrap_model
    from blockcert.pipeline.certify import BlockResult, RunResult, RunSettings, run
    from blockcert.pipeline.stitch import stitch
    from blockcert.plugins import get_plugins
    from blockcert.policy import Policy
    from blockcert.spec import parse_spec
    from blockcert.verifier.core import verify


def to_ir(model: _typing.Any, index: int, n_ctx: int = 512) -> BlockIR:
    """Block ``index`` of a :class:`LoadedModel` as an IR covering positions ``0..n_ctx-1``."""
    from blockcert.plugins import get_plugins

    return get_plugins().to_ir(model.native, index, n_ctx)


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(_importlib.import_module(module), attr)
    raise AttributeError(f"module 'blockcert' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What users call (``__all__``, loaded lazily) and the package's own dunders; not the helpers above."""
    return sorted({*__all__, "__version__", "__doc__", "__file__", "__name__", "__path__"})


__all__ = [
    "SCHEMA_VERSION",
    "BlockMetrics",
    "BlockResult",
    "BoundReport",
    "BoundSettings",
    "bound",
    "stitch",
    "verify",
    "Policy",
    "RunResult",
    "RunSettings",
    "run",
    "BlockIR",
    "LoadedModel",
    "Replay",
    "UserError",
    "check_blocks",
    "get_plugins",
    "hookimpl",
    "load_ir",
    "load_model",
    "parse_spec",
    "replay",
    "save_ir",
    "to_ir",
    "wrap_model",
]
