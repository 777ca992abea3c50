"""The floor of the collector bench: what the same requests cost with nothing done to the answers.

One TCP connection per cabinet (a bare :class:`asyncio.Protocol`, no stream buffering), the poll's
Modbus TCP requests built once, each sent and its answer collected to the length its header gives,
nothing decoded, nothing encoded, no line written. What is left is what every client making these
requests one at a time pays, in the same runner on the same event loop: the send and receive system
calls (on loopback the kernel's delivery to the simulator is charged to the sender), the event loop's
wake-ups and the scheduling of the polls. No client can spend less per reading than this while making
the same requests, so ``plain client / floor`` is the best ratio any collector could show against the
plain client (issue: "≤ 1/3 of the plain client's CPU").
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

__all__ = ["FloorCabinet", "FloorPoll"]

_FUNCTION = {"holding": 3, "input": 4, "coil": 1, "discrete": 2}


class FloorPoll:
    __slots__ = ("lines", "slots", "requests")

    def __init__(self, slots: int, requests: int) -> None:
        self.lines: list[str] = []
        self.slots, self.requests = slots, requests


class _Link(asyncio.Protocol):
    """Bytes in until one whole answer (MBAP header + its length) is there, then the waiter is woken."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if len(buf) >= 6 and len(buf) >= 6 + (buf[4] << 8 | buf[5]):
            del buf[:]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))


class FloorCabinet:
    """One cabinet polled with pre-built requests; ``fetch()`` returns only the counts."""

    def __init__(self, name: str, host: str, port: int, device_id: int, plan: list[Any], slots: int,
                 interval_s: float) -> None:
        self.name, self.interval_s = name, interval_s
        self._host, self._port, self._slots = host, port, slots
        # MBAP (transaction id patched per request, protocol 0, length 6, unit) + function, address, count.
        self._frames = [bytearray(struct.pack(">HHHBBHH", 0, 0, 6, device_id, _FUNCTION[r.register_type],
                                              r.address, r.count)) for r in plan]
        self._link: _Link | None = None
        self._tid = 0

    async def fetch(self) -> FloorPoll:
        loop = asyncio.get_running_loop()
        if self._link is None or self._link.closed:
            _, self._link = await loop.create_connection(_Link, self._host, self._port)
        link = self._link
        assert link.transport is not None
        for frame in self._frames:
            self._tid = (self._tid + 1) & 0xFFFF
            struct.pack_into(">H", frame, 0, self._tid)
            link.waiter = loop.create_future()
            link.transport.write(frame)
            await link.waiter
        return FloorPoll(self._slots, len(self._frames))

    async def close(self) -> None:
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
