"""Prompt sets shipped with BlockCert, written by us (``builtin:<name>``)."""

from __future__ import annotations

import json
from importlib import resources

from blockcert.errors import UserError


def names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))


def probe_items() -> list[dict[str, str]]:
    """The 30 human-written probe prompts of the stitched evaluation, with human labels (arithmetic, simple
    facts, yes/no): ``prompt``, ``label`` and ``kind`` each."""
    text = resources.files(__name__).joinpath("semantic_probe.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def builtin(name: str) -> list[str]:
    """The prompts of built-in set ``name``, one per line."""
    if name not in names():
        raise UserError(f"unknown built-in prompt set 'builtin:{name}'", f"available: {', '.join('builtin:' + n for n in names())}")
    text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
