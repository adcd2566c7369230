"""Records plugins hand to the catalogue hooks' ``register`` callbacks. No torch here."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import attrs

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{type(instance).__name__}.{attribute.name} {value!r}: use lowercase letters, digits, '-', '_', '.'")


@attrs.frozen
class Architecture:
    """A model family an adapter handles.

    ``model_types`` are HF ``config.model_type`` values and ``block_classes`` the HF block class names
    (e.g. ``LlamaDecoderLayer``); either identifies a loaded model as this architecture.
    """

    name: str = attrs.field(validator=_name)
    model_types: tuple[str, ...] = attrs.field(converter=tuple)
    block_classes: tuple[str, ...] = attrs.field(converter=tuple)
    description: str = ""


@attrs.frozen
class ModelEntry:
    """A model known by name (``--model NAME``).

    ``locate()`` returns the local path (an HF directory or a ``.gguf`` file) or raises
    :class:`blockcert.errors.ModelNotInstalled` naming what to install. It must never download anything.
    """

    name: str = attrs.field(validator=_name)
    description: str
    locate: Callable[[], Path] = attrs.field(eq=False)
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    default: bool = False
    #: the weights' licence or terms of use, one line (shown by ``blockcert models`` and when the model is loaded)
    licence: str = ""
    #: (package, file inside it): the full terms text an installed package ships, shown by path
    terms: tuple[str, str] | None = None


@attrs.frozen
class SyntheticShape:
    """A named model shape ``blockcert synth`` can fill with seeded random weights (``--shape NAME``).

    ``config(layers, dtype)`` builds the Hugging Face config (a ``PretrainedConfig``) of a model of this
    shape with ``layers`` layers, whose tokenizer is the synthetic byte-level one (``<s>`` 256, ``</s>``
    257, ``<unk>`` 258). The writer draws every tensor N(0, 1/fan_in); it scales those whose names end
    in one of ``residual_writers`` (the projections back into the residual stream) by 1/sqrt(2 layers),
    draws those ending in one of ``embeddings`` N(0, 1) and those ending in one of ``norms`` 1 + 0.1 N(0, 1).
    """

    name: str = attrs.field(validator=_name)
    description: str
    layers: int
    max_positions: int
    config: Callable[[int, str], object] = attrs.field(eq=False)
    residual_writers: tuple[str, ...] = attrs.field(converter=tuple)
    embeddings: tuple[str, ...] = attrs.field(converter=tuple)
    norms: tuple[str, ...] = attrs.field(default=("norm.weight",), converter=tuple)
