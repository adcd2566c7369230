"""Spec strings for surrogates, ablations and edits: ``name`` or ``name:key=value,key=value``."""

from __future__ import annotations

import re

import attrs

from .errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@attrs.frozen
class Spec:
    name: str
    params: dict[str, str] = attrs.field(factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())


def parse_spec(text: str, what: str = "spec") -> Spec:
    """Parse ``name:key=value,...``; errors name the offending part."""
    name, _, rest = text.strip().partition(":")
    if not _NAME.match(name):
        raise UserError(f"{what} {text!r}: {name!r} is not a valid name", "write name or name:key=value,...")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key or not value:
            raise UserError(f"{what} {text!r}: {item!r} is not key=value")
        if key in params:
            raise UserError(f"{what} {text!r}: {key!r} given twice")
        params[key] = value
    return Spec(name, params)
