"""Errors a user can act on.

A :class:`UserError` is a mistake or a missing prerequisite on the user's side (a bad flag, an
unreadable file, a model that is not installed). The CLI prints its message and hint on one or two
lines and exits with code 2, never with a traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ModelNotInstalled(UserError):
    """A registered model whose weights are not on this machine."""


class IRFormatError(UserError):
    """An IR file on disk that is malformed, inconsistent or of an unknown schema version."""
