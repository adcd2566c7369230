"""The verifier's two references, chosen by name: each is a module with ``replay_one(ir, x_in)``,
``recheck_bounds``, ``remeasure_edit`` and ``FullCheck`` (the model at level full). The numpy one never imports
torch or producer code (tests/test_import_graph.py); the torch one is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

REFERENCES = ("torch", "numpy")
BACKENDS = {"torch": "blockcert.verifier.torch_reference", "numpy": "blockcert.verifier.reference.full"}


def backend(reference: str) -> Any:
    """The module of ``reference`` (see :data:`BACKENDS`)."""
    return importlib.import_module(BACKENDS[reference])


def replay_one(ir: Any, x_in: np.ndarray, reference: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output [T, d], mask [T, T] bool, head gates [H] bool) of the IR on one prompt's x^(l), by ``reference``."""
    return backend(reference).replay_one(ir, x_in)
