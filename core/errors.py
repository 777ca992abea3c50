"""One error base for input Cascade cannot use: where it came from, which key, what, and the fix.

    >>> err = InputError("config/local.yaml", "cabinets[0].port", "'x' is not a port", "write 1-65535")
    >>> str(err)
    "config/local.yaml: cabinets[0].port: 'x' is not a port. Fix: write 1-65535"
    >>> isinstance(err, CascadeError) and isinstance(err, ValueError)
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CascadeError", "InputError", "format_error"]


def format_error(source: str | None, key: str | None, problem: str, fix: str | None) -> str:
    """``source: key: problem. Fix: fix`` with the parts that are known."""
    where = ": ".join(part for part in (source, key) if part)
    text = f"{where}: {problem}" if where else problem
    return f"{text}. Fix: {fix}" if fix else text


class CascadeError(ValueError):
    """Base of every error Cascade raises about bad input (config, profile, rule, frame, payload).

    A ``ValueError`` so callers that validate generically keep working. ``source`` names the file,
    device or request; ``key`` the part of it; ``fix`` what to do next. Subclasses with their own
    message layout pass ``message``.
    """

    def __init__(self, problem: str, *, source: str | Path | None = None, key: str | None = None,
                 fix: str | None = None, message: str | None = None) -> None:
        self.source = None if source is None else str(source)
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(message if message is not None else format_error(self.source, key, problem, fix))


class InputError(CascadeError):
    """A file or document that cannot be used, located by ``source`` and ``key`` (positional form)."""

    def __init__(self, source: str | Path, key: str, problem: str, fix: str) -> None:
        super().__init__(problem, source=source, key=key, fix=fix)
