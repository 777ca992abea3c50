"""Delivery log: one JSON line per finished delivery, the audit trail of who was told what and when.

Append-only JSON lines so that ``grep``/``jq`` answer "was the on-call phoned about cabinet 7 at
03:12?" without a database. Each line is flushed on write: after a crash the log must still show
the pages that went out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DeliveryLog", "DeliveryRecord"]


@dataclass(frozen=True)
class DeliveryRecord:
    receiver: str
    channel: str
    provider: str
    recipient: str
    fingerprint: str
    alertname: str
    status: str  # firing | resolved
    attempts: int
    result: str  # sent | failed
    code: int | None
    error: str | None
    duration_s: float


class DeliveryLog:
    """Appends DeliveryRecords to ``path`` (or nowhere when ``path`` is None)."""

    def __init__(self, path: str | os.PathLike[str] | None, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    def write(self, record: DeliveryRecord) -> None:
        if self._file is None:
            return
        when = dt.datetime.fromtimestamp(self._clock(), tz=dt.UTC).isoformat(timespec="milliseconds")
        self._file.write(json.dumps({"time": when, **asdict(record)}, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
