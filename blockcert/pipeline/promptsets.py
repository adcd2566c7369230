"""Prompt sets: ``builtin:<name>``, a text file (one prompt per line) or JSONL (``{"prompt": ...}`` per line)."""

from __future__ import annotations

import json
from pathlib import Path

from blockcert import prompts
from blockcert.errors import UserError


def load_prompts(spec: str) -> list[str]:
    if spec.startswith("builtin:"):
        return prompts.builtin(spec.removeprefix("builtin:"))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}", f"pass a file, or one of {', '.join('builtin:' + n for n in prompts.names())}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from exc
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            value = item if isinstance(item, str) else item.get("prompt", item.get("text")) if isinstance(item, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{path}:{n}: expected a string or an object with a \"prompt\" string")
            out.append(value)
    else:
        out = [line for line in text.splitlines() if line.strip()]
    if not out:
        raise UserError(f"{path} holds no prompts")
    return out
