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
import logging
import platform
import socket
import struct
import sys
from collections.abc import Sequence

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

__all__ = ["LinkResponse", "ModbusTcpLink"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">HHHBB")  # transaction, protocol, length, unit, function
_REQUEST = struct.Struct(">HHHBBHH")  # ... + address, count (or value)
_MAX_FRAME = 260  # MBAP (7) + the largest PDU (253)


def _kernel_gathers() -> bool:
    """Linux signals a TCP socket readable only once SO_RCVLOWAT bytes are in, and at once when the mark
    is lowered, since 4.18 (tcp_set_rcvlowat); elsewhere select/epoll may ignore the mark: not used."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_RCVLOWAT"):
        return False
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (4, 18)


_GATHER = _kernel_gathers()
_RELEASE_MIN_S = 0.005
_RELEASE_MAX_S = 0.25
_SIZES_MAX = 1024  # reads whose answer sizes a link keeps (a cabinet's plan has about ten)
_WORDS = tuple(struct.Struct(f">{n}H") for n in range(128))  # a register answer of n words (at most 126 fit)
_BITS = tuple(tuple(bool(byte >> i & 1) for i in range(8)) for byte in range(256))  # a byte's 8 bits, lowest first


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


class _Batch:
    """The answers of requests written together: one future for all of them, so the task waiting for
    a batch wakes once, when the last answer is in (or the first failure), not once per answer."""

    __slots__ = ("frames", "left", "future", "sent_at", "release", "gathered")

    def __init__(self, future: asyncio.Future[list[bytes]], size: int, sent_at: float) -> None:
        self.frames: list[bytes] = [b""] * size
        self.left = size
        self.future = future
        self.sent_at = sent_at
        self.release: asyncio.TimerHandle | None = None  # when the socket wakes the loop for less (gather)
        self.gathered = False


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        # transaction id -> the batch it belongs to and its place there (a single request: a batch of one)
        self.waiters: dict[int, tuple[_Batch, int]] = {}
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
        # Gathering a batch's answers (module docstring): the socket's low-water mark now, the socket
        # (None where the platform has no SO_RCVLOWAT for TCP or refused it), and how long a batch may
        # gather before whatever came is read (three times the last batch's answer time, bounded).
        self.lowat = 1
        self.sock: socket.socket | None = None
        self.release_s = _RELEASE_MAX_S

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
        if _GATHER:
            self.sock = transport.get_extra_info("socket")

    def gather(self, loop: asyncio.AbstractEventLoop, batch: _Batch, nbytes: int) -> None:
        """Have the socket wake the loop once ``nbytes`` are in (the whole batch answered in full), and
        release it to any byte after ``release_s`` (a short answer: a refusal, a busy device)."""
        if self.sock is None or not self._set_lowat(nbytes):
            return
        batch.gathered = True
        batch.release = loop.call_at(batch.sent_at + min(self.release_s, self.timeout / 2), self._release, batch)

    def _release(self, batch: _Batch) -> None:
        batch.release = None
        if not batch.future.done() and self.sock is not None:
            self._set_lowat(1)  # the kernel signals at once what already came

    def _gathered(self, batch: _Batch, now: float) -> None:
        """A gathered batch is in: the next may gather for three times as long as this one took
        (bounded; longer after a batch that needed its release), and the idle link reads any byte (an
        answer repeated or come late is read and dropped now, not met by the next request)."""
        if batch.release is not None:
            batch.release.cancel()
            batch.release = None
        self.release_s = min(max(3 * (now - batch.sent_at), _RELEASE_MIN_S), _RELEASE_MAX_S)
        if self.lowat != 1:
            self._set_lowat(1)

    def _set_lowat(self, nbytes: int) -> bool:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)  # type: ignore[union-attr]
        except OSError as err:  # not this platform's or socket's: answers are read as they come
            log.debug("SO_RCVLOWAT %d refused (%s): answers read as they come", nbytes, err)
            self.sock = None
            if self.lowat != 1:  # the mark may be left high: a fresh connection starts at 1
                self._fail(ConnectionException(f"cannot lower the receive mark of the connection: {err}"))
            return False
        self.lowat = nbytes
        return True

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        # One segment can hold several answers (pipelined requests), and end in part of one: read
        # frames by offset, keep only the unfinished rest.
        end = len(data)
        at = 0
        while end - at >= 6:
            size = 6 + (data[at + 4] << 8 | data[at + 5])
            if size > _MAX_FRAME or size < 9:
                self._fail(ModbusException(f"malformed MBAP header: length {size - 6}"))
                return
            if end - at < size:
                break
            frame = data if at == 0 and size == end else data[at:at + size]
            at += size
            if not self.waiters:
                continue  # an answer nobody waits for (it came after a timeout): dropped
            entry = self.waiters.pop(frame[0] << 8 | frame[1], None)
            if entry is None:  # out of step with the device: no answer on this link can be trusted
                tid, protocol = _HEADER.unpack_from(frame)[:2]
                expected = ", ".join(map(str, sorted(self.waiters)))
                self._fail(ModbusException(f"answer to transaction {tid} (protocol {protocol}), expected {expected}"))
                return
            batch, place = entry
            batch.frames[place] = frame
            batch.left -= 1
            if not batch.left and not batch.future.done():
                batch.future.set_result(batch.frames)
                if batch.gathered and self.loop is not None:
                    self._gathered(batch, self.loop.time())
            if self.waiters and self.loop is not None:
                # A batch: each answer gives the next its whole timeout, as one request at a time has it
                # (a device that queues requests still answers them one by one).
                self.deadline = self.loop.time() + self.timeout
        if at < end:
            buf += data[at:] if at else data
        if self.lowat != 1 and self.waiters and self.sock is not None:
            self._set_lowat(1)  # fewer bytes than foreseen made a wake-up: the rest is read as it comes

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
        for batch, _place in waiters.values():
            if batch.release is not None:
                batch.release.cancel()
                batch.release = None
            if not batch.future.done():
                batch.future.set_exception(err)


class ModbusTcpLink:
    """One Modbus TCP connection: one request at a time, or a batch in flight (:meth:`read_many`); the
    caller holds a lock, so requests of two callers never mix."""

    def __init__(self, host: str, port: int = 502, *, timeout: float = 3.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._protocol: _Protocol | None = None
        self._tid = 0
        self._sizes: dict[int, dict[tuple[int, int, int], int]] = {}  # unit -> read -> bytes of its last answer

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
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), len(requests), loop.time())
        tids = []
        frames = []
        waiters = p.waiters
        tid = self._tid
        for place, (function, address, count) in enumerate(requests):
            tid = (tid + 1) & 0xFFFF
            tids.append(tid)
            waiters[tid] = (batch, place)
            frames.append(_REQUEST.pack(tid, 0, 6, device_id, function, address, count))
        self._tid = tid
        p.arm(loop, self.timeout)
        if p.sock is not None and len(requests) > 1:
            # The bytes the answers take: as each read was last answered (a read a device refuses
            # every time is foreseen as its 9-byte refusal), else in full.
            sizes = self._sizes.setdefault(device_id, {})  # a gateway's link reaches several units
            p.gather(loop, batch, sum(sizes.get(request) or _full_size(request) for request in requests))
        elif p.lowat != 1:
            p._set_lowat(1)
        p.transport.write(b"".join(frames))  # type: ignore[union-attr]  # _live checked it
        answers = await self._await(p, batch, tids)
        if p.sock is not None:
            sizes = self._sizes.setdefault(device_id, {})
            if len(sizes) > _SIZES_MAX:
                sizes.clear()
            sizes.update(zip(requests, map(len, answers)))
        return [_parse(frame, tid, device_id, function, count)
                for frame, tid, (function, _address, count) in zip(answers, tids, requests)]

    async def _await(self, p: _Protocol, batch: _Batch, tids: list[int]) -> list[bytes]:
        """The batch's answers; a batch given up (cancelled) closes the link: its late answers must not
        meet the next request. A failure ends every request of the batch (``_settle``)."""
        try:
            # A cancelled poll is cancelled here at once: nothing between the task and the future can
            # swallow it (3.11's wait_for could, when the answer and the cancellation came together).
            return await batch.future
        finally:
            if batch.release is not None:
                batch.release.cancel()
                batch.release = None
            if not batch.future.done() or batch.future.cancelled():
                batch.future.cancel()
                for tid in tids:
                    p.waiters.pop(tid, None)
                if self._protocol is p:
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
        batch = _Batch(loop.create_future(), 1, 0.0)
        p.waiters[tid] = (batch, 0)
        p.arm(loop, self.timeout)
        if p.lowat != 1:  # after a batch: one answer, read as it comes
            p._set_lowat(1)
        p.transport.write(_REQUEST.pack(tid, 0, 6, device_id, function, address, value))  # type: ignore[union-attr]
        frame, = await self._await(p, batch, [tid])
        return _parse(frame, tid, device_id, function, value)


def _full_size(request: tuple[int, int, int]) -> int:
    """The bytes of a whole answer to a read: MBAP and function (8), byte count (1), the data."""
    function, _address, count = request
    return 9 + (2 * count if function >= 3 else (count + 7) >> 3)


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
        return LinkResponse(function, registers=_WORDS[size >> 1].unpack_from(frame, 9))
    bits = [bit for byte in frame[9:] for bit in _BITS[byte]]  # coils and inputs, lowest bit first
    del bits[count:]
    return LinkResponse(function, bits=bits)
