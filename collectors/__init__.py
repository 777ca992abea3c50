"""Sources: plugins that turn device traffic into typed reports (:class:`core.events.Report`).

Each kind registers a builder here; the app builds sources by kind from config and the pipeline
never names a protocol. Adding a source: a subpackage with a settings class and a class that
satisfies :class:`core.ports.Source` (and :class:`core.ports.Commander` if its devices take
commands), then one entry in :data:`SOURCE_KINDS` (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collectors.modbus.settings import ModbusSettings
from collectors.modbus.source import KIND as MODBUS
from collectors.modbus.source import ModbusSource
from collectors.runner import PollMetrics
from collectors.vehicles.watch import KIND as VEHICLES
from collectors.vehicles.watch import VehicleWatchSettings, VehicleWatchSource
from core.ports import Emit, Source

__all__ = ["SOURCE_KINDS", "SourceBuilder", "build_source"]

SourceBuilder = Callable[..., Source]
"""``builder(settings, *, emit, metrics, seed) -> Source``."""

SOURCE_KINDS: dict[str, tuple[type, SourceBuilder]] = {
    MODBUS: (ModbusSettings, ModbusSource),
    VEHICLES: (VehicleWatchSettings, VehicleWatchSource),
}
"""Source kind → (its settings type, its builder)."""


def build_source(kind: str, settings: Any, *, emit: Emit, metrics: PollMetrics | None = None,
                 seed: int | None = None) -> Source:
    """The source of ``kind`` for ``settings``; a clear error for an unknown kind or wrong settings."""
    try:
        settings_type, builder = SOURCE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}; known kinds: {sorted(SOURCE_KINDS)}") from None
    if not isinstance(settings, settings_type):
        raise TypeError(f"source kind {kind!r} takes {settings_type.__name__}, not {type(settings).__name__}")
    return builder(settings, emit=emit, metrics=metrics, seed=seed)
