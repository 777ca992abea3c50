"""A lean Modbus TCP client link: the six requests Cascade sends, nothing else on the hot path.

The collector bench showed pymodbus's client spending as much CPU per read as all of Cascade's
decoding (transaction manager, PDU objects, a debug string per request). This link keeps the parts
that matter for a collector — one connection, MBAP framing, transaction ids, Modbus exception
responses, timeouts, and several requests in flight where the device takes them (:meth:`read_many`) —
and decodes a response with one ``struct.unpack_from``
straight from the receive buffer. It answers like pymodbus's ``AsyncModbusTcpClient`` (the same
method names, ``registers``/``bits``, ``isError()``, ``exception_code``) and raises pymodbus's own
exception types, so :class:`collectors.modbus.device.ModbusCabinet` keeps one error mapping.
pymodbus stays where it carries its weight: the simulators' servers and its exception vocabulary.

Framing (Modbus Messaging on TCP/IP Implementation Guide v1.0b, 3.1.3): MBAP header = transaction
id (2), protocol id 0 (2), length of what follows (2), unit id (1); then the PDU.

    link = ModbusTcpLink("10.0.0.5", 502, timeout=3.0)
    await link.connect()
    rr = await link.read_holding_registers(100, count=10, device_id=1)
    rr.registers  # a tuple of ten ints
    answers = await link.read_many([(3, 100, 10), (4, 0, 60)], device_id=1)  # pipelined: one write

Pipelining (Implementation Guide 4.2.1: a client may send several requests without waiting; the
transaction id pairs each answer with its request): ``read_many`` writes all its requests at once and
matches the answers by transaction id, in whatever order they come. It saves a round trip per request
(a system call and an event-loop wake-up each, most of a poll's cost once decoding is cheap), but
only a device that queues requests can take it: many answer the first and drop the rest, so the
collector sends one at a time unless a cabinet is configured otherwise (``max_in_flight``).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

__all__ = ["LinkResponse", "ModbusTcpLink"]

_HEADER = struct.Struct(">HHHBB")  # transaction, protocol, length, unit, function
_REQUEST = struct.Struct(">HHHBBHH")  # ... + address, count (or value)
_MAX_FRAME = 260  # MBAP (7) + the largest PDU (253)


class LinkResponse:
    """One answer: ``registers`` (words) or ``bits``, or a Modbus exception (``isError()``)."""

    __slots__ = ("registers", "bits", "exception_code", "function_code")

    def __init__(self, function_code: int, registers: tuple[int, ...] = (), bits: list[bool] | None = None,
                 exception_code: int | None = None) -> None:
        self.function_code = function_code
        self.registers = registers
        self.bits = bits or []
        self.exception_code = exception_code

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name, so callers need not know which client answered
        return self.exception_code is not None


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiters: dict[int, asyncio.Future[bytes]] = {}  # transaction id -> the request's answer
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        # One lazy timer per connection instead of one per request: a request (and, in a batch, each
        # answer) moves the deadline, the timer fails the waiters only once the deadline has passed, else
        # re-arms for it (a poll's ten requests
        # within a few milliseconds cost ten clock reads, not ten timers set and cancelled).
        self.deadline = 0.0
        self.timeout = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.deadline = loop.time() + timeout
        if self.timer is not None and self.timer.when() > self.deadline:  # a shorter timeout than before
            self.timer.cancel()
            self.timer = None
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        if not self.waiters:
            return  # idle: the next request arms the timer again
        if loop.time() + 0.001 >= self.deadline:
            self._settle(ModbusIOException(f"no answer within {self.timeout:g} s"))
        else:
            self.timer = loop.call_at(self.deadline, self._expire, loop)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while len(buf) >= 6:  # one segment can hold several answers (pipelined requests)
            size = 6 + (buf[4] << 8 | buf[5])
            if size > _MAX_FRAME or size < 9:
                self._fail(ModbusException(f"malformed MBAP header: length {size - 6}"))
                return
            if len(buf) < size:
                return
            frame = bytes(buf[:size])
            del buf[:size]
            if not self.waiters:
                continue  # an answer nobody waits for (it came after a timeout): dropped
            waiter = self.waiters.pop(frame[0] << 8 | frame[1], None)
            if waiter is None:  # out of step with the device: no answer on this link can be trusted
                tid, protocol = _HEADER.unpack_from(frame)[:2]
                expected = ", ".join(map(str, sorted(self.waiters)))
                self._fail(ModbusException(f"answer to transaction {tid} (protocol {protocol}), expected {expected}"))
                return
            if not waiter.done():
                waiter.set_result(frame)
            if self.waiters and self.loop is not None:
                # A batch: each answer gives the next its whole timeout, as one request at a time has it
                # (a device that queues requests still answers them one by one).
                self.deadline = self.loop.time() + self.timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.disarm()
        self._fail(ConnectionException(f"connection closed by peer{': ' + str(exc) if exc else ''}"))

    def _fail(self, err: Exception) -> None:
        self.lost = err
        self._settle(err)
        if self.transport is not None:
            self.transport.close()

    def _settle(self, err: Exception) -> None:
        """Every request in flight ends with ``err``."""
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(err)


class ModbusTcpLink:
    """One Modbus TCP connection: one request at a time, or a batch in flight (:meth:`read_many`); the
    caller holds a lock, so requests of two callers never mix."""

    def __init__(self, host: str, port: int = 502, *, timeout: float = 3.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._protocol: _Protocol | None = None
        self._tid = 0

    @property
    def connected(self) -> bool:
        p = self._protocol
        return p is not None and p.transport is not None and p.lost is None

    async def connect(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            _transport, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, self.host, self.port), self.timeout)
        except TimeoutError as err:
            raise ConnectionException(f"no connection within {self.timeout:g} s") from err
        self._protocol = protocol
        return True

    def close(self) -> None:
        p, self._protocol = self._protocol, None
        if p is not None:
            p.disarm()
            # A request in flight ends now, not when the transport gets round to connection_lost (which
            # waits for unsent data to drain: never, for a peer that stopped reading).
            p._settle(ConnectionException("connection closed while waiting for an answer"))
            if p.transport is not None:
                p.transport.close()

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> LinkResponse:
        return await self._exchange(3, address, count, device_id)

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> LinkResponse:
        return await self._exchange(4, address, count, device_id)

    async def read_coils(self, address: int, *, count: int = 1, device_id: int = 1) -> LinkResponse:
        return await self._exchange(1, address, count, device_id)

    async def read_discrete_inputs(self, address: int, *, count: int = 1, device_id: int = 1) -> LinkResponse:
        return await self._exchange(2, address, count, device_id)

    async def write_coil(self, address: int, value: bool, *, device_id: int = 1) -> LinkResponse:
        return await self._exchange(5, address, 0xFF00 if value else 0x0000, device_id)

    async def write_register(self, address: int, value: int, *, device_id: int = 1) -> LinkResponse:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"a register holds 0..65535, not {value}")  # the caller's mistake, not the link's
        return await self._exchange(6, address, value, device_id)

    async def read_many(self, requests: Sequence[tuple[int, int, int]], *,
                        device_id: int = 1) -> list[LinkResponse]:
        """Several reads, ``(function, address, count)`` each (function 1-4), written at once: the answers
        in the order asked, matched by transaction id. Each answer is awaited for the link's timeout from
        the one before. A broken or missing answer fails the whole batch, as one request's would; the
        caller closes the link (answers may still be on their way). A batch given up (cancelled) closes
        the link itself: its late answers must not meet the next request."""
        for function, _address, _count in requests:
            if not 1 <= function <= 4:
                raise ValueError(f"read_many sends reads (functions 1-4), not function {function}")
        p = self._live()
        loop = asyncio.get_running_loop()
        tids = []
        frames = []
        for function, address, count in requests:
            self._tid = tid = (self._tid + 1) & 0xFFFF
            tids.append(tid)
            p.waiters[tid] = loop.create_future()
            frames.append(_REQUEST.pack(tid, 0, 6, device_id, function, address, count))
        waiters = [p.waiters[tid] for tid in tids]
        p.arm(loop, self.timeout)
        p.transport.write(b"".join(frames))  # type: ignore[union-attr]  # _live checked it
        try:
            return [_parse(await waiter, tid, device_id, function, count)
                    for waiter, tid, (function, _address, count) in zip(waiters, tids, requests)]
        finally:
            abandoned = False
            for tid, waiter in zip(tids, waiters):
                p.waiters.pop(tid, None)
                if waiter.cancelled():
                    abandoned = True
                elif waiter.done():
                    waiter.exception()  # retrieved: one failure of a batch is reported once, not per request
                else:
                    abandoned = True
                    waiter.cancel()
            if abandoned and self._protocol is p:
                self.close()

    def _live(self) -> _Protocol:
        p = self._protocol
        if p is None or p.transport is None or p.lost is not None:
            raise ConnectionException("not connected")
        return p

    async def _exchange(self, function: int, address: int, value: int, device_id: int) -> LinkResponse:
        p = self._live()
        self._tid = tid = (self._tid + 1) & 0xFFFF
        loop = asyncio.get_running_loop()
        waiter = p.waiters[tid] = loop.create_future()
        p.arm(loop, self.timeout)
        p.transport.write(_REQUEST.pack(tid, 0, 6, device_id, function, address, value))  # type: ignore[union-attr]
        try:
            # A cancelled poll is cancelled here at once: nothing between the task and the future can
            # swallow it (3.11's wait_for could, when the answer and the cancellation came together).
            frame = await waiter
        finally:
            p.waiters.pop(tid, None)
            if waiter.cancelled() and self._protocol is p:
                self.close()  # given up: its late answer must not meet the next request
        return _parse(frame, tid, device_id, function, value)


def _parse(frame: bytes, tid: int, device_id: int, function: int, count: int) -> LinkResponse:
    got_tid, protocol, _length, unit, got_function = _HEADER.unpack_from(frame)
    if got_tid != tid or protocol != 0:
        raise ModbusException(f"answer to transaction {got_tid} (protocol {protocol}), expected {tid}")
    if unit != device_id and device_id != 0:
        raise ModbusException(f"answer from unit {unit}, asked unit {device_id}")
    if got_function == function | 0x80:
        return LinkResponse(function, exception_code=frame[8])
    if got_function != function:
        raise ModbusException(f"answer with function {got_function}, asked {function}")
    if function >= 5:  # writes echo address and value
        return LinkResponse(function)
    size = frame[8]
    if len(frame) != 9 + size:
        raise ModbusException(f"byte count {size} but {len(frame) - 9} data bytes")
    # A short answer (fewer values than asked) is returned as it came: the caller names it "short".
    if function >= 3:
        if size % 2:
            raise ModbusException(f"register answer with an odd byte count {size}")
        return LinkResponse(function, registers=struct.unpack_from(f">{size // 2}H", frame, 9))
    data: Any = frame[9:]
    return LinkResponse(function, bits=[bool(data[i >> 3] >> (i & 7) & 1) for i in range(min(count, 8 * size))])
