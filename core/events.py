"""Typed points that cross seams: what a source reports, what the engine and actions emit.

Sources hand a :class:`Report` to the pipeline; alerting emits :class:`AlertEvent` and
:class:`CommandResult`; a sink takes any :data:`Point` and owns its encoding (InfluxDB line
protocol, in :mod:`exporters.influx.schema`). None of these knows a transport.

    >>> AlertEvent("over_temperature", "S1", "C1", 3, "warning", 1, 0, "raise", 47.0, None,
    ...            summary="pack at 47 C", timestamp_ns=0).slot
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from core.model import CabinetReading, VehicleReading

__all__ = ["AlertEvent", "CommandResult", "Point", "RejectedValue", "Report"]


class RejectedValue(Protocol):
    """A value a source rejected while decoding: which target and field, and (``str()``) why."""

    @property
    def cabinet_id(self) -> str: ...

    @property
    def field(self) -> str: ...


@dataclass(slots=True)
class Report:
    """One delivery from a source: a reading, the values it rejected, and the requests it cost.

    ``requests`` is what the source spent to produce it (Modbus reads; 0 for pushed messages),
    ``failed_reads`` the requests the device refused (their fields are missing, the rest is good).
    """

    reading: CabinetReading
    errors: Sequence[RejectedValue] = ()
    requests: int = 0
    failed_reads: int = 0
    source: str = ""  # the source kind that produced it (metrics label)
    # Evaluated by the warning engine only: another process stores and exports it (vehicle reports,
    # stored by the ingest workers; the watch in `cascade run` only feeds the engine).
    watch_only: bool = False


@dataclass(slots=True)
class CommandResult:
    """The outcome of a protective or operator command, read back from the device (who, what, when)."""

    cabinet_id: str
    command: str
    slot: int | None
    value: int | bool
    actor: str
    requested_at: float
    ok: bool
    readback: int | bool | None = None
    error: str = ""
    completed_at: float = field(default=0.0)
    site: str = ""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert level change as stored for history and annotations (measurement ``alert``)."""

    rule: str
    site: str
    cabinet: str
    slot: int | None
    severity: str
    level: int
    from_level: int
    kind: str  # raise | escalate | de-escalate | clear
    value: float | None
    battery: str | None
    summary: str | None = None
    diagnosis: str | None = None
    action: str | None = None
    timestamp_ns: int = 0
    category: str | None = None  # the regulator's alarm category (alerting/categories.py)


Point: TypeAlias = CabinetReading | VehicleReading | AlertEvent | CommandResult
"""Anything a sink stores."""
