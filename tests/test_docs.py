"""Meta-tests that keep the plugin surface honest (after datasette's ``test_docs.py``).

Every hookspec must be documented in docs/plugins.md under ``### blockcert_name(arg1, arg2)`` with its
exact argument names, and no heading may name a hook that does not exist. That every hook is really
called by a test is checked at the end of the session (tests/test_zz_hooks_called.py).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from blockcert import hookspecs

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DOCS = ROOT / "docs" / "plugins.md"

HOOKS = {
    name: list(inspect.signature(fn).parameters)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("blockcert_")
}
HEADING = re.compile(r"^### (blockcert_\w+)\((.*)\)\s*$", re.MULTILINE)


def documented() -> dict[str, list[str]]:
    """hook name -> argument names, from every ``### blockcert_...(...)`` heading in docs/plugins.md."""
    headings: dict[str, list[str]] = {}
    for name, args in HEADING.findall(PLUGIN_DOCS.read_text(encoding="utf-8")):
        assert name not in headings, f"{name} has two headings in {PLUGIN_DOCS.name}"
        headings[name] = [a.strip() for a in args.split(",") if a.strip()]
    return headings


def test_hookspecs_found() -> None:
    assert {"blockcert_trace", "blockcert_to_ir", "blockcert_replay"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented(hook: str) -> None:
    headings = documented()
    expected = f"### {hook}({', '.join(HOOKS[hook])})"
    assert hook in headings, f"{PLUGIN_DOCS.name} has no heading for {hook}: add `{expected}`"
    assert headings[hook] == HOOKS[hook], f"{PLUGIN_DOCS.name}: the heading for {hook} should read `{expected}`"


def test_no_heading_names_a_missing_hook() -> None:
    stale = sorted(set(documented()) - set(HOOKS))
    assert not stale, f"{PLUGIN_DOCS.name} documents hooks that do not exist: {', '.join(stale)}"
