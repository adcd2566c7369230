"""Prompt sets shipped with BlockCert, written by us (``builtin:<name>``).

Each ``<name>.txt`` here is the set ``builtin:<name>``, one prompt per line: ``default`` (4 prompts),
``stress`` (10, one per genre and two more) and ``corpus``, the larger set: 64 prompts, about 4,500 tokens with the
SmolLM2 tokenizer (40 to 120 per prompt), 8 per genre, genre by genre in the order of :data:`CORPUS_GENRES`
(technical writing, multilingual, safety, legal, poetry, code, translation, quantitative), so prompt ``i`` is
of genre ``CORPUS_GENRES[i // 8]`` (:func:`genres`). ``refusal.jsonl`` is the labelled refusal corpus of
``blockcert edit`` (:mod:`blockcert.edit.refusal`), ``semantic_probe.jsonl`` the probe of the stitched
evaluation (:func:`probe_items`).
"""

from __future__ import annotations

import json
from importlib import resources

from blockcert.errors import UserError


def names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".txt"))


#: The genres of ``builtin:corpus``, in file order, 8 prompts each.
CORPUS_GENRES = ("technical writing", "multilingual", "safety", "legal", "poetry", "code", "translation", "quantitative")


def probe_items() -> list[dict[str, str]]:
    """The 60 human-written probe prompts of the stitched evaluation, with human labels, 12 of each kind
    (arithmetic, fact, yes/no, completion, antonym): ``prompt``, ``label`` and ``kind`` each. Each label is a
    content word that the SmolLM2 tokenizer encodes, with the leading space it takes after the prompt, as one
    token; the prompt ends without a trailing space."""
    text = resources.files(__name__).joinpath("semantic_probe.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def builtin(name: str) -> list[str]:
    """The prompts of built-in set ``name``, one per line."""
    if name not in names():
        raise UserError(f"unknown built-in prompt set 'builtin:{name}'", f"available: {', '.join('builtin:' + n for n in names())}")
    text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def genres(name: str) -> list[str] | None:
    """The genre of each prompt of built-in set ``name``, in order (``builtin:corpus``), or None for a set
    without genre labels."""
    if name != "corpus":
        return None
    n = len(builtin(name))
    per = n // len(CORPUS_GENRES)
    return [CORPUS_GENRES[min(i // per, len(CORPUS_GENRES) - 1)] for i in range(n)]
