"""The Modbus source plugin: a fleet of cabinets polled on their own schedules.

    source = ModbusSource(ModbusSettings(cabinets, profiles), emit=pipeline.handle)
    async with source:                    # polls until exit; every poll reaches ``emit``
        await source.command("C0001", "slot_output", slot=3, value=False, actor="rule:x")

It is both a :class:`core.ports.Source` (pull: the shared :class:`~collectors.runner.PollRunner`
schedules, times and backs off) and a :class:`core.ports.Commander` for its cabinets.
"""

from __future__ import annotations

from collections.abc import Mapping

from collectors.runner import PollMetrics, PollRunner
from core.events import CommandResult, Report
from core.ports import Emit, UnknownDevice

from .device import KIND, ModbusCabinet
from .settings import ModbusSettings

__all__ = ["KIND", "ModbusSource"]


class ModbusSource:
    """Polls every configured cabinet; one :class:`ModbusCabinet` (one connection) each."""

    kind = KIND

    def __init__(self, settings: ModbusSettings, *, emit: Emit, metrics: PollMetrics | None = None,
                 seed: int | None = None) -> None:
        self.settings = settings
        self.cabinets = [ModbusCabinet(c, settings.profiles[c.profile]) for c in settings.cabinets]
        self.by_id = {c.name: c for c in self.cabinets}
        self._emit = emit
        self.runner: PollRunner[Report] = PollRunner(self.cabinets, on_result=self._deliver, metrics=metrics,
                                                     jitter=settings.jitter, backoff_cap_s=settings.backoff_cap_s,
                                                     seed=seed)

    async def _deliver(self, _device: ModbusCabinet, report: Report) -> None:
        await self._emit(report)

    # -- Source ----------------------------------------------------------------------------------

    def devices(self) -> Mapping[str, str]:
        return {c.id: c.site for c in self.settings.cabinets}

    def online(self) -> Mapping[str, bool | None]:
        return self.runner.online

    async def __aenter__(self) -> ModbusSource:
        await self.runner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.__aexit__(*exc)

    # -- Commander -------------------------------------------------------------------------------

    def slot_count(self, device: str) -> int | None:
        cabinet = self.by_id.get(device)
        return None if cabinet is None else cabinet.slot_count

    async def command(self, device: str, name: str, *, slot: int | None, value: int | bool,
                      actor: str) -> CommandResult:
        cabinet = self.by_id.get(device)
        if cabinet is None:
            raise UnknownDevice(f"cabinet {device!r} is not served by this Modbus source")
        return await cabinet.command(name, slot=slot, value=value, actor=actor)
