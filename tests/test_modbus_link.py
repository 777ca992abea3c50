"""The lean Modbus TCP link (collectors/modbus/tcp.py) against pymodbus's own client and server,
and against a raw peer that answers with broken frames."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collectors.modbus import tcp
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import find_profile
from collectors.modbus.tcp import ModbusTcpLink
from simulators.fleet import build_fleet
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block

_READERS = ("read_input_registers", "read_holding_registers", "read_coils", "read_discrete_inputs")
_METHOD = {"input": "read_input_registers", "holding": "read_holding_registers", "coil": "read_coils",
           "discrete": "read_discrete_inputs"}


async def _simulated(profile_name: str):
    """One simulated cabinet of the profile on a free port: the started server and the cabinet."""
    fleet = build_fleet([(profile_name, find_profile(profile_name))], cabinets=1, per_port=1,
                        base_port=free_port_block(1), clock=ManualClock(), seed=3)
    server = SimulatorServer(fleet, control_port=0, timer_s=3600)
    await server.start()
    return server, fleet.cabinets[0]


@pytest.mark.parametrize("profile_name", ["reference-cabinet", "volta-s8", "kestrel-k10"])
async def test_every_planned_read_answers_as_pymodbus_reads_it(profile_name: str) -> None:
    """Second implementation: pymodbus's client and the link read the same registers, word for word."""
    server, cab = await _simulated(profile_name)
    reference = AsyncModbusTcpClient("127.0.0.1", port=cab.port, timeout=2, retries=0)
    link = ModbusTcpLink("127.0.0.1", cab.port, timeout=2)
    try:
        assert await reference.connect()
        assert await link.connect()
        for request in plan_reads(cab.profile, cab.slot_count):
            method = _METHOD[request.register_type]
            want = await getattr(reference, method)(request.address, count=request.count, device_id=cab.device_id)
            got = await getattr(link, method)(request.address, count=request.count, device_id=cab.device_id)
            assert not got.isError() and not want.isError()
            if request.register_type in ("coil", "discrete"):
                assert got.bits == list(want.bits[:request.count]), request
            else:
                assert list(got.registers) == list(want.registers), request
        # an address the profile does not map: both see Modbus exception 2 (illegal data address)
        refused = await link.read_holding_registers(60000, count=2, device_id=cab.device_id)
        assert refused.isError() and refused.exception_code == 2
    finally:
        reference.close()
        link.close()
        await server.stop()


@contextlib.asynccontextmanager
async def _peer(answer, gap_s: float = 0.0):
    """A raw TCP peer: ``answer(request_bytes) -> bytes | None`` (None: stay silent); with ``gap_s``, each
    answer is its own segment, that long after the one before (a device working through a queue)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                request = await reader.readexactly(12)
                reply = answer(request)
                if reply == b"close":
                    writer.close()
                    return
                if gap_s:
                    await asyncio.sleep(gap_s)
                if isinstance(reply, tuple):  # (first part, pause, rest): an answer split in two segments
                    writer.write(reply[0])
                    await writer.drain()
                    await asyncio.sleep(reply[1])
                    reply = reply[2]
                if reply:
                    writer.write(reply)
                    await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _reply(request: bytes, pdu: bytes, *, tid_shift: int = 0, unit: int | None = None) -> bytes:
    tid, _p, _l, req_unit = struct.unpack(">HHHB", request[:7])
    return struct.pack(">HHHB", (tid + tid_shift) & 0xFFFF, 0, len(pdu) + 1,
                       req_unit if unit is None else unit) + pdu


async def _link(port: int, timeout: float = 1.0) -> ModbusTcpLink:
    link = ModbusTcpLink("127.0.0.1", port, timeout=timeout)
    assert await link.connect()
    return link


async def test_registers_and_bits_decode_from_the_frame() -> None:
    def answer(req: bytes) -> bytes:
        fc = req[7]
        if fc == 3:
            return _reply(req, bytes([3, 4]) + struct.pack(">HH", 0x1234, 0xFFFF))
        return _reply(req, bytes([1, 2, 0b10100101, 0b1]))  # bits 0,2,5,7 then 8

    async with _peer(answer) as port:
        link = await _link(port)
        assert (await link.read_holding_registers(10, count=2)).registers == (0x1234, 0xFFFF)
        bits = (await link.read_coils(0, count=9)).bits
        assert bits == [True, False, True, False, False, True, False, True, True]
        link.close()


@pytest.mark.parametrize(("reply", "error", "match"), [
    (lambda r: _reply(r, bytes([3, 4, 0, 1, 0, 2]), tid_shift=1), ModbusException, "transaction"),
    (lambda r: _reply(r, bytes([3, 4, 0, 1, 0, 2]), unit=9), ModbusException, "unit 9"),
    (lambda r: _reply(r, bytes([4, 2, 0, 1])), ModbusException, "function 4"),
    (lambda r: _reply(r, bytes([3, 3, 0, 1, 0])), ModbusException, "odd byte count"),
    (lambda r: _reply(r, bytes([3, 9, 0, 1])), ModbusException, "byte count 9"),
    (lambda r: struct.pack(">HHH", 1, 0, 999) + bytes(10), ModbusException, "malformed MBAP"),
    (lambda r: None, ModbusIOException, "no answer within"),
    (lambda r: b"close", ConnectionException, "closed by peer"),
])
async def test_a_broken_answer_is_an_error_that_names_it(reply, error, match) -> None:
    async with _peer(reply) as port:
        link = await _link(port, timeout=0.3)
        with pytest.raises(error, match=match):
            await link.read_holding_registers(0, count=2, device_id=1)
        link.close()


async def test_exception_response_and_short_answer_are_returned_for_the_caller_to_judge() -> None:
    def answer(req: bytes) -> bytes:
        return _reply(req, bytes([0x83, 6])) if req[8:10] == b"\x00\x01" else _reply(req, bytes([3, 2, 0, 7]))

    async with _peer(answer) as port:
        link = await _link(port)
        busy = await link.read_holding_registers(1, count=2)
        assert busy.isError() and busy.exception_code == 6
        short = await link.read_holding_registers(2, count=3)
        assert short.registers == (7,)  # fewer than asked: ModbusCabinet calls that a "short" poll
        link.close()


async def test_not_connected_and_refused_values_fail_before_sending() -> None:
    link = ModbusTcpLink("127.0.0.1", 1, timeout=0.5)
    assert not link.connected
    with pytest.raises(ConnectionException, match="not connected"):
        await link.read_coils(0, count=1)
    async with _peer(lambda r: _reply(r, r[7:12])) as port:
        link = await _link(port)
        with pytest.raises(ValueError, match="0..65535"):
            await link.write_register(5, 70000)
        assert not (await link.write_register(5, 12)).isError()  # echo accepted
        assert not (await link.write_coil(3, True)).isError()
        link.close()


def _answers_once():
    """A device that answers its first request (one register, 7) and then none."""
    asked: list[int] = []

    def answer(req: bytes) -> bytes | None:
        asked.append(len(asked))
        return _reply(req, bytes([3, 2, 0, 7])) if len(asked) == 1 else None
    return answer


async def test_each_request_gets_its_whole_timeout_and_a_cancelled_one_stops_at_once() -> None:
    """One timer per connection: a request sent while the timer of an earlier one is pending still gets
    its whole timeout (not what was left of the earlier one's); a silent device fails it after that;
    cancelling a waiting request cancels it at once and leaves no timer behind."""
    async with _peer(_answers_once()) as port:
        link = await _link(port, timeout=0.6)
        loop = asyncio.get_running_loop()
        assert (await link.read_holding_registers(0, count=1)).registers == (7,)
        await asyncio.sleep(0.35)  # the timer armed by the first request fires 0.25 s into the second
        started = loop.time()
        with pytest.raises(ModbusIOException, match="no answer within 0.6 s"):
            await link.read_holding_registers(0, count=1)
        assert 0.55 <= loop.time() - started < 1.5
        task = asyncio.create_task(link.read_holding_registers(0, count=1))
        await asyncio.sleep(0.05)
        started = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 0.2
        link.close()
        assert link._protocol is None


async def test_a_shorter_timeout_takes_effect_at_once_and_closing_ends_a_waiting_request() -> None:
    async with _peer(_answers_once()) as port:
        link = await _link(port, timeout=3.0)
        loop = asyncio.get_running_loop()
        await link.read_holding_registers(0, count=1)  # arms the timer for 3 s
        link.timeout = 0.2
        started = loop.time()
        with pytest.raises(ModbusIOException, match="no answer within 0.2 s"):
            await link.read_holding_registers(0, count=1)
        assert loop.time() - started < 1.0  # not the 3 s the first request armed
        link.timeout = 30.0
        task = asyncio.create_task(link.read_holding_registers(0, count=1))
        await asyncio.sleep(0.05)
        started = loop.time()
        link.close()
        with pytest.raises(ConnectionException, match="closed while waiting"):
            await task
        assert loop.time() - started < 0.5


@pytest.mark.parametrize("profile_name", ["reference-cabinet", "volta-s8", "kestrel-k10"])
async def test_a_pipelined_plan_reads_as_one_request_at_a_time_from_the_simulator(profile_name: str) -> None:
    """``read_many`` writes the whole read plan at once; the simulator's server answers every request of
    the write, and the answers equal pymodbus's client reading one at a time. pymodbus's stock server
    answers only the first (why the simulator has its own handler, simulators/server.py)."""
    from pymodbus.server import ModbusTcpServer

    server, cab = await _simulated(profile_name)
    plan = plan_reads(cab.profile, cab.slot_count)
    codes = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
    batch = [(codes[r.register_type], r.address, r.count) for r in plan]
    reference = AsyncModbusTcpClient("127.0.0.1", port=cab.port, timeout=2, retries=0)
    link = ModbusTcpLink("127.0.0.1", cab.port, timeout=2)
    try:
        assert await reference.connect() and await link.connect()
        answers = await link.read_many(batch, device_id=cab.device_id)
        assert len(answers) == len(plan) > 1
        for request, got in zip(plan, answers):
            want = await getattr(reference, _METHOD[request.register_type])(
                request.address, count=request.count, device_id=cab.device_id)
            assert not got.isError() and not want.isError()
            if request.register_type in ("coil", "discrete"):
                assert got.bits == list(want.bits[:request.count]), request
            else:
                assert list(got.registers) == list(want.registers), request
    finally:
        reference.close()
        link.close()
        await server.stop()
    stock = ModbusTcpServer(server._contexts[cab.port], address=("127.0.0.1", cab.port), ignore_missing_devices=True)
    await stock.serve_forever(background=True)
    link = ModbusTcpLink("127.0.0.1", cab.port, timeout=0.3)
    try:
        assert await link.connect()
        with pytest.raises(ModbusIOException, match="no answer within 0.3 s"):
            await link.read_many(batch[:2], device_id=cab.device_id)
    finally:
        link.close()
        await stock.shutdown()


async def test_a_batch_answered_out_of_step_fails_whole_and_writes_are_not_batched() -> None:
    async with _peer(lambda r: _reply(r, bytes([3, 2, 0, 1]), tid_shift=5)) as port:
        link = await _link(port, timeout=0.5)
        with pytest.raises(ModbusException, match=r"answer to transaction 6 \(protocol 0\), expected 1, 2"):
            await link.read_many([(3, 0, 1), (3, 1, 1)])
        assert not link.connected
        link.close()
    link = ModbusTcpLink("127.0.0.1", 1)
    with pytest.raises(ValueError, match="read_many sends reads"):
        await link.read_many([(3, 0, 1), (6, 0, 1)])


async def test_a_request_split_across_segments_is_answered_and_so_are_the_ones_after_it() -> None:
    """The simulator keeps an incomplete request's bytes while it answers the one before (pymodbus's own
    server empties its buffer on every answer and then answers nothing more on that connection)."""
    server, cab = await _simulated("reference-cabinet")
    frames = [struct.pack(">HHHBBHH", tid, 0, 6, cab.device_id, 4, 0, 2) for tid in (1, 2, 3)]
    try:
        for cut in (3, 7, 11):
            reader, writer = await asyncio.open_connection("127.0.0.1", cab.port)
            writer.write(frames[0] + frames[1][:cut])
            await writer.drain()
            first = await asyncio.wait_for(reader.readexactly(13), 2)
            writer.write(frames[1][cut:])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(frames[2])
            await writer.drain()
            rest = await asyncio.wait_for(reader.readexactly(26), 2)
            assert [first[1], rest[1], rest[14]] == [1, 2, 3], cut
            writer.close()
    finally:
        await server.stop()


async def test_a_batch_given_up_closes_the_link_so_its_answers_cannot_meet_the_next_request() -> None:
    async with _peer(lambda r: None) as port:  # never answers
        link = await _link(port, timeout=5.0)
        task = asyncio.create_task(link.read_many([(3, 0, 1), (3, 1, 1)]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not link.connected
        link = await _link(port, timeout=5.0)
        task = asyncio.create_task(link.read_holding_registers(0, count=1))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not link.connected


def _wakeups(link: ModbusTcpLink) -> list[int]:
    """Counts the link's receives (each one an event-loop wake-up for the poll)."""
    calls = [0]
    protocol = link._protocol
    received = protocol.data_received

    def counted(data: bytes) -> None:
        calls[0] += 1
        received(data)
    protocol.data_received = counted  # type: ignore[method-assign]
    return calls


@pytest.mark.skipif(not tcp._GATHER, reason="SO_RCVLOWAT gathering is Linux's")
async def test_a_batch_answered_in_separate_segments_wakes_the_collector_once_and_short_answers_are_not_held() -> None:
    """Gathering (SO_RCVLOWAT): five answers, each its own segment 3 ms apart, reach the link in one
    receive. A read refused by surprise (an answer shorter than foreseen) is read after the release,
    far inside the timeout; then it is foreseen. An answer split in two, and one longer than foreseen,
    are read as they come."""
    refuse = {"on": False}
    split = {"on": False}

    def answer(req: bytes):
        address = struct.unpack(">H", req[8:10])[0]
        if refuse["on"] and address == 2:
            return _reply(req, bytes([0x83, 2]))
        reply = _reply(req, bytes([3, 4]) + struct.pack(">HH", address, 7))
        return (reply[:10], 0.05, reply[10:]) if split["on"] and address == 4 else reply

    batch = [(3, address, 2) for address in range(5)]
    async with _peer(answer, gap_s=0.003) as port:
        link = await _link(port, timeout=5.0)
        loop = asyncio.get_running_loop()
        calls = _wakeups(link)
        answers = await link.read_many(batch)
        assert [a.registers for a in answers] == [(address, 7) for address in range(5)]
        assert calls[0] == 1
        refuse["on"] = True
        started = loop.time()
        answers = await link.read_many(batch)
        assert loop.time() - started < 0.5  # the release (at most 0.25 s), not the 5 s timeout
        assert answers[2].exception_code == 2 and answers[3].registers == (3, 7)
        calls[0] = 0
        answers = await link.read_many(batch)  # the refusal is foreseen now: one wake-up again
        assert calls[0] == 1 and answers[2].isError()
        refuse["on"] = False
        split["on"] = True
        started = loop.time()
        answers = await link.read_many(batch)  # longer than foreseen, and the last one split
        assert [a.registers for a in answers] == [(address, 7) for address in range(5)]
        assert loop.time() - started < 0.25
        split["on"] = False
        assert (await link.read_holding_registers(9, count=2)).registers == (9, 7)  # one request: as it comes
        assert [a.registers for a in await link.read_many(batch)] == [(address, 7) for address in range(5)]
        link.close()


@pytest.mark.skipif(not tcp._GATHER, reason="SO_RCVLOWAT gathering is Linux's")
async def test_after_a_gathered_batch_a_repeated_answer_is_dropped_not_met_by_the_next_request() -> None:
    """A gateway repeating its last answer while the link is idle: read and dropped, as without gathering
    (the mark goes back to one byte when a batch is in), so the next request gets its own answer."""
    def answer(req: bytes):
        address = struct.unpack(">H", req[8:10])[0]
        reply = _reply(req, bytes([3, 4]) + struct.pack(">HH", address, 6))
        return (reply, 0.02, reply) if address == 2 else reply  # the last read's answer comes twice

    async with _peer(answer) as port:
        link = await _link(port, timeout=1.0)
        answers = await link.read_many([(3, 0, 2), (3, 1, 2), (3, 2, 2)])
        assert [a.registers for a in answers] == [(0, 6), (1, 6), (2, 6)]
        await asyncio.sleep(0.2)
        assert (await link.read_holding_registers(5, count=2)).registers == (5, 6)
        assert await link.read_many([]) == []  # nothing to ask: nothing written, nothing awaited
        link.close()


@pytest.mark.skipif(not tcp._GATHER, reason="SO_RCVLOWAT gathering is Linux's")
async def test_gathering_follows_a_device_that_slows_down_and_a_lost_mark_drops_the_connection() -> None:
    """Batches that take longer than the release learnt from fast ones teach a longer one: after a
    couple of slow batches the link wakes once per batch again. If the mark cannot be lowered, the
    connection is dropped at once (a fresh one starts at one byte), not left to time out."""
    def answer(req: bytes):
        return _reply(req, bytes([3, 2]) + struct.pack(">H", struct.unpack(">H", req[8:10])[0]))

    batch = [(3, address, 1) for address in range(5)]
    async with _peer(answer, gap_s=0.001) as port:
        link = await _link(port, timeout=3.0)
        calls = _wakeups(link)
        for _ in range(3):
            await link.read_many(batch)
        fast = link._protocol.release_s
        link.close()
    async with _peer(answer, gap_s=0.03) as slow_port:  # the same device, slower
        link = await _link(slow_port, timeout=3.0)
        link._protocol.release_s = fast  # as learnt from the fast device
        calls = _wakeups(link)
        for _ in range(4):
            calls[0] = 0
            answers = await link.read_many(batch)
            assert [a.registers for a in answers] == [(address,) for address in range(5)]
        assert calls[0] == 1 and link._protocol.release_s > 3 * fast

        class Refusing:  # the socket refuses to lower its mark again
            def __init__(self, sock) -> None:
                self.sock = sock

            def setsockopt(self, level: int, name: int, value: int) -> None:
                if value == 1:
                    raise OSError(22, "Invalid argument")
                self.sock.setsockopt(level, name, value)
        link._protocol.sock = Refusing(link._protocol.sock)
        answers = await link.read_many(batch)  # answered in full; lowering the mark afterwards fails
        assert [a.registers for a in answers] == [(address,) for address in range(5)]
        assert not link.connected
        with pytest.raises(ConnectionException, match="not connected"):
            await link.read_holding_registers(0, count=1)
        link.close()
