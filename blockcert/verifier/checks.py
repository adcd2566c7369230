"""The verifier's vocabulary: a check, the checker that records checks, and the schema helpers every
verifier module (blocks, full-model, edits, bounds) shares. No torch, no producer code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import rfc8785

from blockcert.artifacts.safeio import ArtifactError
from blockcert.errors import UserError


@attrs.frozen
class Check:
    name: str
    ok: bool
    claimed: str = ""
    actual: str = ""
    detail: str = ""


class Fail(Exception):
    """Stops the checks of one certificate (the failure is already recorded)."""


class Checker:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def record(self, name: str, ok: bool, claimed: Any = "", actual: Any = "", detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), fmt(claimed), fmt(actual), detail))
        return bool(ok)

    def require(self, name: str, ok: bool, claimed: Any = "", actual: Any = "", detail: str = "") -> None:
        if not self.record(name, ok, claimed, actual, detail):
            raise Fail


@contextlib.contextmanager
def guard(c: Checker, rel: str) -> Iterator[None]:
    """Checks of one certificate: a failed ``require`` stops them; a malformed artifact becomes a failed
    check naming the certificate, never an exception escaping the verifier."""
    try:
        yield
    except Fail:
        pass
    except (ArtifactError, UserError) as exc:
        c.record("artifacts", False, detail=str(exc))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RecursionError, MemoryError) as exc:
        c.record("well-formed", False, detail=f"{rel}: {type(exc).__name__}: {str(exc)[:200]}")


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None or value == "" else str(value)


def exact_keys(c: Checker, what: str, obj: Any, keys: set[str]) -> None:
    """``obj`` is a JSON object with exactly ``keys``: a missing or an unknown field fails."""
    if not isinstance(obj, dict):
        c.require(f"schema {what}", False, "object", type(obj).__name__)
    missing, extra = keys - set(obj), set(obj) - keys
    c.require(f"schema {what}", not missing and not extra, ",".join(sorted(keys)), ",".join(sorted(map(str, obj))),
              f"missing {sorted(missing)}" if missing else f"unknown fields {sorted(map(str, extra))}" if extra else "")


def typed(c: Checker, what: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    c.require(f"schema {what}", ok, getattr(kind, "__name__", str(kind)), type(value).__name__)
    return value


def real(c: Checker, what: str, value: Any) -> float:
    typed(c, what, value, (int, float))
    return float(value)


def short(value: Any) -> str:
    try:
        text = rfc8785.dumps(value).decode() if value is not None else "missing"
    except Exception:  # not JSON-able (a forged value of an odd type): show its repr
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
