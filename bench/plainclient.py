"""The baseline of the collector bench: what a competent engineer writes without Cascade.

A plain pymodbus client per cabinet, making the *same* batched reads per poll as Cascade's planner
(so the comparison is per-reading cost, not batching), decoding every field with :mod:`struct` and
encoding one ``influxdb_client.Point`` per slot to line protocol. No validation, no missing-value
sentinels, no over-range handling, no error accounting: the cheapest honest client. It runs against
the same simulators in the same run as Cascade's collector, so the ratio of the two is the figure
(issue: "the collector is no cheaper than a plain client").
"""

from __future__ import annotations

import struct
import time
from typing import Any

from influxdb_client import Point
from pymodbus.client import AsyncModbusTcpClient

__all__ = ["PlainCabinet", "PlainPoll"]

_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers", "coil": "read_coils",
           "discrete": "read_discrete_inputs"}
_FORMAT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f", "u64": ">Q", "i64": ">q",
           "f64": ">d"}


class PlainPoll:
    """What one plain poll returns: the lines and the slot count (for the bench's counters)."""

    __slots__ = ("lines", "slots", "requests")

    def __init__(self, lines: list[str], slots: int, requests: int) -> None:
        self.lines, self.slots, self.requests = lines, slots, requests


class PlainCabinet:
    """One cabinet read by a bare client: ``fetch()`` → line protocol, like the dozen-line script."""

    def __init__(self, name: str, host: str, port: int, device_id: int, plan: list[Any], slots: int,
                 interval_s: float) -> None:
        self.name, self.interval_s = name, interval_s
        self._host, self._port, self._device_id = host, port, device_id
        self._plan, self._slots = plan, slots
        self._client: AsyncModbusTcpClient | None = None

    async def fetch(self) -> PlainPoll:
        if self._client is None or not self._client.connected:
            self._client = AsyncModbusTcpClient(self._host, port=self._port, timeout=5, retries=0)
            await self._client.connect()
        cabinet: dict[str, Any] = {}
        slots: dict[int, dict[str, Any]] = {}
        for request in self._plan:
            response = await getattr(self._client, _METHOD[request.register_type])(
                request.address, count=request.count, device_id=self._device_id)
            words = response.bits if request.register_type in ("coil", "discrete") else response.registers
            for f in request.fields:
                spec = f.spec
                if spec.data_type in ("bool", "bit"):
                    value: Any = bool(words[f.index] >> (spec.bit or 0) & 1) if spec.data_type == "bit" \
                        else bool(words[f.index])
                elif spec.data_type == "string":
                    raw = struct.pack(f">{spec.words}H", *words[f.index:f.index + spec.words])
                    value = raw.decode("ascii", "ignore").rstrip("\x00 ")
                else:
                    raw = struct.pack(f">{spec.words}H", *words[f.index:f.index + spec.words])
                    value = struct.unpack(_FORMAT[spec.data_type], raw)[0] * spec.scale + spec.offset_value
                (cabinet if f.slot is None else slots.setdefault(f.slot, {}))[f.name] = value
        now = time.time_ns()
        point = Point("cabinet").tag("cabinet", self.name).time(now)
        for key, value in cabinet.items():
            point.field(key, value)
        lines = [point.to_line_protocol()]
        for slot, values in slots.items():
            point = Point("slot").tag("cabinet", self.name).tag("slot", str(slot)).time(now)
            for key, value in values.items():
                point.field(key, value)
            lines.append(point.to_line_protocol())
        return PlainPoll(lines, len(slots), len(self._plan))

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
