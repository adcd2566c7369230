"""Prompt sets shipped with BlockCert, written by us (``builtin:<name>``)."""

from __future__ import annotations

from importlib import resources

from blockcert.errors import UserError


def names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))


def builtin(name: str) -> list[str]:
    """The prompts of built-in set ``name``, one per line."""
    if name not in names():
        raise UserError(f"unknown built-in prompt set 'builtin:{name}'", f"available: {', '.join('builtin:' + n for n in names())}")
    text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
