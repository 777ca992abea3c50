"""Addresses of the running local stack (``make run`` writes ``var/stack.env``), for client commands.

    >>> import os; os.environ["CASCADE_METRICS_PORT"] = "29108"
    >>> stack_value("CASCADE_METRICS_PORT")
    '29108'

The environment wins; else ``var/stack.env`` in the current directory, else the one beside the
project; else ``None`` (the caller's default applies).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["stack_value"]

_FILES = (Path("var/stack.env"), Path(__file__).resolve().parents[1] / "var" / "stack.env")


def _read(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def stack_value(name: str) -> str | None:
    """``name`` from the environment or the running stack's ``var/stack.env``."""
    if os.environ.get(name):
        return os.environ[name]
    for path in _FILES:
        value = _read(path).get(name)
        if value:
            return value
    return None
