"""The Protocols at Cascade's seams. Implementations live above the ground floor; callers
depend on these, never on a concrete class (and never on ``Any``).

Flow: a :class:`Source` emits :class:`~core.events.Report` reports → the pipeline (app) stores them
through a :class:`PointSink` and hands each reading to every subscriber of its
:class:`ReadingFeed` (the warning engine) → alerting emits events to an :class:`EventHandler`
and acts on devices through a :class:`Commander`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from core.events import CommandResult, Point, Report
from core.model import CabinetReading

__all__ = ["Commander", "Emit", "EventHandler", "PointSink", "ReadingFeed", "ReadingHook", "Source",
           "UnknownDevice"]

Emit = Callable[[Report], Awaitable[None]]
"""How a source delivers: awaited, so a slow consumer slows the source instead of piling up."""
ReadingHook = Callable[[CabinetReading], Awaitable[None] | None]
EventHandler = Callable[[Iterable[Point]], None]
"""Where alerting sends its events (alert changes, command records); must not block."""


class UnknownDevice(LookupError):
    """A command for a device no source of this process serves."""


class PointSink(Protocol):
    """Stores domain points; owns their encoding. ``submit`` never blocks on I/O."""

    def submit(self, points: Iterable[Point]) -> None: ...


class ReadingFeed(Protocol):
    """Hands every reading to its subscribers, in order, on the event loop."""

    def subscribe(self, hook: ReadingHook) -> None: ...

    def unsubscribe(self, hook: ReadingHook) -> None: ...


@runtime_checkable
class Commander(Protocol):
    """Acts on devices: the only way alerting reaches a cabinet.

    ``slot_count`` is ``None`` for a device this commander does not serve; ``command`` raises
    :class:`UnknownDevice` for one, and otherwise reports failures in the result, never raises.
    """

    def slot_count(self, device: str) -> int | None: ...

    async def command(self, device: str, name: str, *, slot: int | None, value: int | bool,
                      actor: str) -> CommandResult: ...


class Source(Protocol):
    """A plugin that produces readings: pulled (a Modbus poll) or pushed (MQTT, HTTPS, BLE gateway).

    Built by kind from config (``collectors.SOURCE_KINDS``). Entered as an async context manager:
    from ``__aenter__`` to ``__aexit__`` it calls ``emit`` with every report; on exit it stops its
    tasks and closes its connections.
    """

    kind: str

    def devices(self) -> Mapping[str, str]:
        """Device id → site, known before the first report (for metrics and health)."""
        ...

    def online(self) -> Mapping[str, bool | None]:
        """Device id → reachable now (``None``: not tried yet)."""
        ...

    async def __aenter__(self) -> Source: ...

    async def __aexit__(self, *exc: object) -> None: ...
