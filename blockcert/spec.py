"""Spec strings for surrogates, ablations and edits: ``name`` or ``name:key=value,key=value``."""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from blockcert.errors import UserError

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


def parse_blocks(spec: str | Sequence[int], n_blocks: int, flag: str = "--blocks") -> list[int]:
    """``all``, ``0,5,10``, ``0-4`` (and mixes such as ``0-2,7``) -> sorted block indices; errors name ``flag``."""
    if not isinstance(spec, str):
        chosen = sorted(set(int(i) for i in spec))
        bad = [i for i in chosen if not 0 <= i < n_blocks]
        if bad or not chosen:
            raise UserError(f"blocks {bad or chosen} do not exist (the model has blocks 0-{n_blocks - 1})")
        return chosen
    if spec.strip() == "all":
        return list(range(n_blocks))
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            rng = range(int(lo), int(hi) + 1) if dash else range(int(lo), int(lo) + 1)
        except ValueError:
            raise UserError(f"{flag} {spec!r}: {part!r} is not a block index or range", "use all, 0,5,10 or 0-4") from None
        for i in rng:
            if not 0 <= i < n_blocks:
                raise UserError(f"{flag} {spec!r}: block {i} does not exist (the model has blocks 0-{n_blocks - 1})")
            out.add(i)
    if not out:
        raise UserError(f"{flag} {spec!r} selects no block")
    return sorted(out)
