"""One duration parser for every file Cascade reads (rules, scenarios, config).

    >>> parse_duration("2m"), parse_duration("3m10s"), parse_duration("500ms"), parse_duration(90)
    (120.0, 190.0, 0.5, 90.0)
"""

from __future__ import annotations

import math
import re
from typing import Any

from core.errors import CascadeError

__all__ = ["DurationError", "parse_duration"]

# A bare number, or one or more number+unit parts: 90, 90s, 5m, 5min, 3m10s, 1.5h, 500ms, 30d.
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|min|m|h|d))+|\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|min|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


class DurationError(CascadeError):
    """Not a non-negative, finite duration; the message shows how to write one."""


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # int too large to convert to text
        return "a very large integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_duration(value: Any) -> float:
    """Seconds from a number or text such as ``30s``, ``2m``, ``1.5h``, ``3m10s``, ``500ms``, ``30d``.

    A bare number is seconds. Raises :class:`DurationError` (a ``ValueError``) for anything else,
    negative or not finite.
    """
    if isinstance(value, bool):
        raise DurationError(f"{value!r} is not a duration; write e.g. 30s, 2m or 1h")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise DurationError(f"{_short(value)} is not a finite duration") from None
    elif isinstance(value, str) and _DURATION.fullmatch(text := value.replace(" ", "")):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        raise DurationError(f"{_short(value)} is not a duration; write e.g. 30s, 2m or 1h")
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(f"{_short(value)} is not a non-negative duration")
    return seconds
