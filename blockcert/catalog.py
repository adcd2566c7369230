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
