"""The Modbus cabinet's poll and command path (collectors/modbus/device.py) against a scripted Modbus
TCP peer on loopback: the requests on the wire (function, address, unit id), the busy retry, what
each failure is called, and the read-back of a command. Written to kill the mutants `make mutate`
found alive. The peer is a real TCP server speaking Modbus (like tests/fixtures/bad_modbus.py);
Cascade's Modbus TCP link (collectors/modbus/tcp.py) is used as it is in production."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collectors.modbus.device import KIND, ModbusCabinet
from collectors.modbus.profile import Profile, load_profile
from collectors.modbus.settings import CabinetConfig
from collectors.runner import PollFailed
from core.events import Report
from tests.fixtures.clock import T0, ManualClock
from tests.fixtures.ports import free_port
from tests.fixtures.profiles import profile_from_text

PROFILE = """\
model: scripted
max_gap: 0
slots:
  count: 2
  base: {input: 100, coil: 10, holding: 200}
  stride: {input: 4, coil: 1, holding: 1}
cabinet:
  - {field: input_voltage_v, register: input, address: 0, type: u16}
  - {field: door_open, register: discrete, address: 3}
slot:
  - {field: soc_pct, register: input, offset: 0, type: u16}
commands:
  slot_output: {register: coil, per_slot: true, offset: 0}
  charge_limit: {register: holding, per_slot: true, offset: 0}
  cabinet_fan: {register: holding, address: 50}
"""

READ_CODES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


@dataclass
class Peer:
    """A Modbus TCP server with a register/bit table. ``exceptions[fc]`` lists the exception codes to
    answer requests of that function with, in turn; ``writes_ignored`` makes writes acknowledged but
    not stored (a stuck relay); ``empty_reads`` answers reads with no values."""

    port: int = 0
    words: dict[tuple[str, int], int] = field(default_factory=dict)
    exceptions: dict[int, list[int]] = field(default_factory=dict)
    writes_ignored: bool = False
    empty_reads: bool = False
    silent: bool = False  # read every request, answer none (a device that hangs)
    hang_up: bool = False  # close the connection on the first request, unanswered
    answer_unit: int | None = None  # answer as this unit id, not the one asked (a gateway mix-up)
    # Pipelining: hold the answers until this many requests have come, then send them together (in
    # reverse order with ``reverse``): a client waiting for each answer gets none.
    batch: int = 0
    reverse: bool = False
    answer_after_s: float = 0.0  # each answer this long after the one before (a device working one by one)
    requests: list[tuple[int, int, int, int]] = field(default_factory=list)  # (unit, fc, address, count|value)
    connections: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        held: list[bytes] = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            while True:
                transaction, _protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                fc, address, arg = pdu[0], *struct.unpack(">HH", pdu[1:5])
                self.requests.append((unit, fc, address, arg))
                if self.hang_up:
                    break
                if self.silent:
                    continue
                if self.answer_after_s:
                    await asyncio.sleep(self.answer_after_s)
                answer = self._answer(fc, address, arg, pdu)
                unit = unit if self.answer_unit is None else self.answer_unit
                held.append(struct.pack(">HHHB", transaction, 0, len(answer) + 1, unit) + answer)
                if len(held) >= self.batch:
                    writer.write(b"".join(reversed(held) if self.reverse else held))
                    held.clear()
                    await writer.drain()
        writer.close()

    def _answer(self, fc: int, address: int, arg: int, pdu: bytes) -> bytes:
        script = self.exceptions.get(fc)
        if script:
            return bytes([fc | 0x80, script.pop(0)])
        if fc == 5:
            if not self.writes_ignored:
                self.words[("coil", address)] = 1 if arg == 0xFF00 else 0
            return pdu
        if fc == 6:
            if not self.writes_ignored:
                self.words[("holding", address)] = arg
            return pdu
        table = READ_CODES[fc]
        if self.empty_reads:
            return bytes([fc, 0])
        values = [self.words.get((table, address + i), 0) for i in range(arg)]
        if fc in (1, 2):
            packed = bytearray((arg + 7) // 8)
            for i, v in enumerate(values):
                if v:
                    packed[i // 8] |= 1 << (i % 8)
            return bytes([fc, len(packed)]) + bytes(packed)
        return bytes([fc, 2 * arg]) + b"".join(struct.pack(">H", v) for v in values)


@contextlib.asynccontextmanager
async def serve(peer: Peer, host: str = "127.0.0.1") -> AsyncIterator[Peer]:
    server = await asyncio.start_server(peer.handle, host, 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        for writer in peer.connections:
            writer.close()
        await server.wait_closed()


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    return profile_from_text(tmp_path, PROFILE, "scripted")


def _cabinet(profile: Profile, port: int, **kwargs: object) -> ModbusCabinet:
    kwargs = {"host": "127.0.0.1", "timeout_s": 0.5, "busy_backoff_s": 0.001, **kwargs}
    config = CabinetConfig(id="C9", port=port, device_id=7, site="north", **kwargs)  # type: ignore[arg-type]
    return ModbusCabinet(config, profile, wall_clock=ManualClock(T0))


# -- polling ----------------------------------------------------------------------------------------

async def test_a_poll_reads_the_plan_with_the_unit_id_and_decodes_it(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 230, ("discrete", 3): 1, ("input", 100): 55, ("input", 104): 66})
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        assert (cabinet.name, cabinet.slot_count, cabinet.interval_s) == ("C9", 2, 5.0)
        before = time.time_ns()
        report = await cabinet.fetch()
        after = time.time_ns()
        await cabinet.close()
    assert peer.requests == [(7, 4, 0, 1), (7, 4, 100, 1), (7, 4, 104, 1), (7, 2, 3, 1)]
    assert len(peer.connections) == 1  # one connection for the whole poll
    assert before <= report.reading.timestamp_ns <= after
    reading = report.reading
    assert (reading.cabinet_id, reading.site, reading.model) == ("C9", "north", "scripted")
    assert reading.input_voltage_v == 230.0 and reading.door_open is True
    assert [s.soc_pct for s in reading.slots] == [55.0, 66.0]
    assert report.errors == [] and report.requests == 4 and report.failed_reads == 0 and report.source == KIND == "modbus"


async def test_the_configured_slot_count_and_gap_override_the_profile(profile: Profile) -> None:
    cabinet = _cabinet(profile, 1, slots=1)
    assert cabinet.slot_count == 1 and [r.address for r in cabinet.plan] == [0, 100, 3]
    bridged = _cabinet(profile, 1, max_gap=3)  # the profile says 0: the two slot reads become one
    assert [(r.register_type, r.address, r.count) for r in bridged.plan] == [
        ("input", 0, 1), ("input", 100, 5), ("discrete", 3, 1)]


async def test_a_read_refused_with_an_exception_loses_only_its_fields(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 230}, exceptions={2: [2]})  # the discrete read: illegal address
    async with serve(peer):
        report = await _cabinet(profile, peer.port).fetch()
    assert report.reading.input_voltage_v == 230.0 and report.reading.door_open is None
    assert report.failed_reads == 1 and report.requests == 4
    [error] = report.errors
    assert (error.cabinet_id, error.slot, error.field, error.register_type, error.address) == (
        "C9", None, "(read)", "discrete", 0)
    assert error.reason == (
        f"discrete 3+1: read_discrete_inputs at address 3 to unit id 7 on 127.0.0.1:{peer.port} answered "
        "Modbus exception 2 (illegal data address); check the profile's addresses and slots.base/stride "
        "against the vendor's map")


async def test_every_read_refused_fails_the_poll_naming_the_first_three(profile: Profile) -> None:
    peer = Peer(exceptions={4: [1, 1, 1], 2: [1]})
    async with serve(peer):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, peer.port).fetch()
    assert info.value.kind == "exception"
    where = f"to unit id 7 on 127.0.0.1:{peer.port} answered Modbus exception 1 (illegal function); check the " \
            "profile's register type (holding/input/coil/discrete) for this device"
    assert str(info.value) == (f"every read failed: input 0+1: read_input_registers at address 0 {where}; "
                               f"input 100+1: read_input_registers at address 100 {where}; "
                               f"input 104+1: read_input_registers at address 104 {where}")


async def test_a_busy_device_is_retried_with_backoff_then_answers(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 1}, exceptions={4: [6, 6, 6]})
    async with serve(peer):
        started = time.monotonic()
        report = await _cabinet(profile, peer.port, busy_retries=3, busy_backoff_s=0.05).fetch()
        elapsed = time.monotonic() - started
    assert elapsed >= 0.05 * (1 + 2 + 3)  # the backoff grows with each retry
    assert report.errors == [] and report.reading.input_voltage_v == 1.0
    assert [r[1:] for r in peer.requests[:4]] == [(4, 0, 1)] * 4


async def test_a_device_still_busy_after_the_retries_fails_the_poll_as_busy(profile: Profile) -> None:
    peer = Peer(exceptions={4: [6, 6, 6]})
    async with serve(peer):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, peer.port, busy_retries=2).fetch()
    assert info.value.kind == "busy"
    assert len(peer.requests) == 3
    assert "answered Modbus exception 6 (server device busy); check the poll interval" in str(info.value)


@pytest.mark.parametrize("code", [9, 0])
async def test_an_unknown_exception_code_points_at_the_manual(profile: Profile, code: int) -> None:
    peer = Peer(exceptions={4: [code]})
    async with serve(peer):
        report = await _cabinet(profile, peer.port).fetch()
    assert f"Modbus exception {code} (unknown exception); check the device's manual" in report.errors[0].reason


async def test_a_short_answer_fails_the_poll(profile: Profile) -> None:
    peer = Peer(empty_reads=True)
    async with serve(peer):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, peer.port).fetch()
    assert info.value.kind == "short"
    assert str(info.value).endswith("input 0: asked for 1 values, got 0")


async def test_the_configured_host_is_the_one_polled(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 12})
    async with serve(peer, host="127.0.0.2"):
        cabinet = _cabinet(profile, peer.port, host="127.0.0.2")
        report = await cabinet.fetch()
        await cabinet.close()
    assert report.reading.input_voltage_v == 12.0


async def test_a_device_that_does_not_answer_is_asked_once_and_times_out(profile: Profile) -> None:
    peer = Peer(silent=True)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port, timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(PollFailed) as info:
            await cabinet.fetch()
        elapsed = time.monotonic() - started
        await cabinet.close()
    assert info.value.kind == "timeout" and str(info.value).startswith("no answer to read_input_registers: ")
    assert 0.2 <= elapsed < 1.5  # the configured timeout, not the link's default of 3 s
    assert peer.requests == [(7, 4, 0, 1)]  # no retry by the client: the runner owns retries


async def test_nobody_listening_is_a_connect_failure_naming_the_address(profile: Profile) -> None:
    port = free_port()
    with pytest.raises(PollFailed) as info:
        await _cabinet(profile, port).fetch()
    assert info.value.kind == "connect"
    assert f"cannot connect to 127.0.0.1:{port}" in str(info.value)


async def test_a_refused_connection_is_a_connect_failure_with_the_cause(profile: Profile) -> None:
    port = free_port()
    with pytest.raises(PollFailed) as info:
        await _cabinet(profile, port).fetch()
    cause = info.value.__cause__
    assert isinstance(cause, ConnectionRefusedError)
    assert (info.value.kind, str(info.value)) == ("connect", f"cannot connect to 127.0.0.1:{port}: {cause}")


async def test_a_device_that_hangs_up_mid_request_is_a_lost_connection(profile: Profile) -> None:
    peer = Peer(hang_up=True)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        with pytest.raises(PollFailed) as info:
            await cabinet.fetch()
        await cabinet.close()
    assert (info.value.kind, str(info.value)) == (
        "connection", "connection lost during read_input_registers: Modbus Error: [Connection] connection closed "
                      "by peer")
    assert peer.requests == [(7, 4, 0, 1)]


async def test_an_answer_from_another_unit_is_a_protocol_failure_and_the_link_is_reopened(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 5}, answer_unit=8)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        with pytest.raises(PollFailed) as info:
            await cabinet.fetch()
        peer.answer_unit = None
        report = await cabinet.fetch()
        await cabinet.close()
    assert (info.value.kind, str(info.value)) == (
        "protocol", "read_input_registers failed: Modbus Error: answer from unit 8, asked unit 7")
    assert report.reading.input_voltage_v == 5.0 and len(peer.connections) == 2


async def test_a_dropped_connection_is_reopened_on_the_next_poll(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 5})
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        await cabinet.fetch()
        await cabinet.close()
        report = await cabinet.fetch()
        await cabinet.close()
    assert report.reading.input_voltage_v == 5.0 and len(peer.requests) == 8


# -- commands ---------------------------------------------------------------------------------------

async def test_a_coil_command_is_written_read_back_and_reported_with_times(profile: Profile) -> None:
    peer = Peer(words={("coil", 11): 1})
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        result = await cabinet.command("slot_output", slot=2, value=0, actor="rule:x@level2")
    assert peer.requests == [(7, 5, 11, 0x0000), (7, 1, 11, 1)]
    assert (result.cabinet_id, result.command, result.slot, result.value, result.actor, result.site) == (
        "C9", "slot_output", 2, 0, "rule:x@level2", "north")
    assert (result.ok, result.readback, result.error) == (True, False, "")
    assert (result.requested_at, result.completed_at) == (T0, T0)


async def test_a_coil_switched_on_reads_back_true(profile: Profile) -> None:
    peer = Peer()
    async with serve(peer):
        result = await _cabinet(profile, peer.port).command("slot_output", slot=1, value=1, actor="noc")
    assert peer.requests[0] == (7, 5, 10, 0xFF00)
    assert (result.ok, result.readback) == (True, True)


async def test_a_register_command_is_written_and_read_back(profile: Profile) -> None:
    peer = Peer()
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        slot_result = await cabinet.command("charge_limit", slot=2, value=17, actor="noc")
        cabinet_result = await cabinet.command("cabinet_fan", slot=None, value=3, actor="noc")
    assert peer.requests == [(7, 6, 201, 17), (7, 3, 201, 1), (7, 6, 50, 3), (7, 3, 50, 1)]
    assert (slot_result.ok, slot_result.readback, slot_result.error) == (True, 17, "")
    assert (cabinet_result.ok, cabinet_result.readback) == (True, 3)


async def test_a_relay_that_does_not_move_is_a_failed_command(profile: Profile) -> None:
    peer = Peer(words={("coil", 10): 1, ("holding", 200): 9}, writes_ignored=True)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        coil = await cabinet.command("slot_output", slot=1, value=0, actor="rule")
        register = await cabinet.command("charge_limit", slot=1, value=4, actor="rule")
    assert (coil.ok, coil.readback, coil.error) == (False, True, "read back True, expected 0")
    assert (register.ok, register.readback, register.error) == (False, 9, "read back 9, expected 4")


async def test_an_empty_read_back_is_a_failed_command(profile: Profile) -> None:
    peer = Peer(empty_reads=True)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        coil = await cabinet.command("slot_output", slot=1, value=0, actor="rule")
        register = await cabinet.command("charge_limit", slot=1, value=0, actor="rule")
    assert (coil.ok, coil.readback, coil.error) == (False, None, "read-back of coil 10 returned no value")
    assert (register.ok, register.readback, register.error) == (False, None,
                                                                "read-back of register 200 returned no value")


async def test_commands_the_profile_cannot_address_fail_without_a_request(profile: Profile) -> None:
    peer = Peer()
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port)
        unknown = await cabinet.command("fire_suppression", slot=1, value=0, actor="rule")
        no_slot = await cabinet.command("slot_output", slot=None, value=0, actor="rule")
    assert peer.requests == []
    assert not unknown.ok and unknown.error == (  # the message, not a KeyError's quoted repr
        "profile scripted has no command 'fire_suppression'; it has ['cabinet_fan', 'charge_limit', "
        "'slot_output']")
    assert not no_slot.ok and no_slot.error == "command 'slot_output' is per slot: give a slot number"


async def test_a_refused_write_is_a_failed_command_with_the_reason(profile: Profile) -> None:
    peer = Peer(exceptions={5: [4]})
    async with serve(peer):
        result = await _cabinet(profile, peer.port).command("slot_output", slot=1, value=0, actor="rule")
    assert not result.ok and result.readback is None
    assert result.error.startswith("write_coil at address 10 to unit id 7 on 127.0.0.1:")
    assert "Modbus exception 4 (server device failure)" in result.error


async def test_closing_a_cabinet_that_never_connected_is_fine(profile: Profile) -> None:
    cabinet = _cabinet(profile, free_port())
    await cabinet.close()
    await cabinet.close()


async def test_a_value_the_register_cannot_hold_is_a_failed_command_and_logged(profile: Profile, caplog) -> None:
    peer = Peer()
    async with serve(peer):
        result = await _cabinet(profile, peer.port).command("charge_limit", slot=1, value=70000, actor="noc")
    assert not result.ok and result.readback is None
    assert result.error == "a register holds 0..65535, not 70000"
    summary, = [r for r in caplog.records if r.name == "cascade.collectors.modbus"]
    assert (summary.levelno, summary.getMessage()) == (
        logging.ERROR, "command charge_limit cabinet=C9 slot=1 value=70000 by noc: FAILED "
                       "(a register holds 0..65535, not 70000)")
    assert [r for r in peer.requests if r[1] == 6] == []  # nothing was sent


async def test_a_good_command_is_logged_at_info(profile: Profile, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cascade.collectors.modbus")
    peer = Peer()
    async with serve(peer):
        await _cabinet(profile, peer.port).command("slot_output", slot=2, value=0, actor="rule:x@level3")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "cascade.collectors.modbus"] == [
        (logging.INFO, "command slot_output cabinet=C9 slot=2 value=0 by rule:x@level3: ok")]


async def test_a_cabinet_that_cannot_be_reached_is_a_failed_command(profile: Profile) -> None:
    result = await _cabinet(profile, free_port()).command("slot_output", slot=1, value=0, actor="rule")
    assert not result.ok and result.error.startswith("cannot connect to 127.0.0.1:")


async def test_a_command_that_raises_unexpectedly_is_reported_and_logged_never_lost(profile: Profile, caplog) -> None:
    """A protective command reports whatever goes wrong: here a bug below the command path (the request
    itself raising something no device error maps to) becomes a failed result naming it, logged with its
    traceback, and the summary line."""
    cabinet = _cabinet(profile, free_port())

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("driver bug")

    cabinet._call = broken  # type: ignore[method-assign]
    result = await cabinet.command("slot_output", slot=2, value=0, actor="rule:x@level3")
    assert not result.ok and result.error == "unexpected RuntimeError: driver bug"
    records = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records
               if r.name == "cascade.collectors.modbus"]
    assert records == [
        (logging.ERROR, "command slot_output cabinet=C9 slot=2: unexpected error", True),
        (logging.ERROR, "command slot_output cabinet=C9 slot=2 value=0 by rule:x@level3: FAILED "
                        "(unexpected RuntimeError: driver bug)", False)]


# -- the safety fast lane against the scripted peer ---------------------------------------------------

LANE_PROFILE = """\
model: lane
max_gap: 8
slots:
  count: 3
  base: {input: 100}
  stride: {input: 10}
cabinet:
  - {field: input_voltage_v, register: input, address: 0, type: u16}
  - {field: cabinet_temperature_c, register: input, address: 20, type: u16}
  - {field: flame_detected, register: discrete, address: 0}
slot:
  - {field: soc_pct, register: input, offset: 0, type: u16}
  - {field: temperature_c, register: input, offset: 5, type: u16, valid: [0, 90]}
"""


@pytest.fixture
def lane_profile(tmp_path: Path) -> Profile:
    return profile_from_text(tmp_path, LANE_PROFILE, "lane")


@pytest.mark.parametrize("in_flight", [1, 8])
async def test_a_fast_poll_reads_only_the_safety_fields_and_merges_them_into_the_last_full_reading(
        lane_profile: Profile, in_flight: int) -> None:
    peer = Peer(words={("input", 0): 230, ("input", 20): 25, ("input", 100): 50, ("input", 105): 30,
                       ("input", 110): 60, ("input", 115): 31})
    async with serve(peer):
        cabinet = _cabinet(lane_profile, peer.port, slots=2, interval_s=60.0, fast_interval_s=1.0,
                           max_in_flight=in_flight)
        assert cabinet.fast_plan is not None and cabinet.interval_s == 1.0
        full = await cabinet.fetch()
        assert not full.watch_only and full.requests == len(cabinet.plan)
        # between polls: every value changes, a flame appears, slot 2's sensor goes past its range
        peer.words.update({("input", 0): 231, ("input", 20): 40, ("input", 100): 51, ("input", 105): 35,
                           ("input", 110): 61, ("input", 115): 95, ("discrete", 0): 1})
        peer.requests.clear()
        fast = await cabinet.fetch()
    assert fast.watch_only and fast.source == KIND and fast.requests == len(cabinet.fast_plan) < len(cabinet.plan)
    assert list(fast.errors) == [] and fast.failed_reads == 0
    reading = fast.reading
    # safety fields fresh, the rest as the full poll read them
    assert (reading.cabinet_temperature_c, reading.flame_detected, reading.input_voltage_v) == (40.0, True, 230.0)
    one, two = reading.slots
    assert (one.temperature_c, one.soc_pct, two.temperature_c, two.soc_pct) == (35.0, 50.0, 90.0, 60.0)
    assert two.over_range == ("temperature_c",) and one.over_range == ()
    # the lane reads the configured two slots, not the profile's three: nothing at slot 3's registers
    assert all(not 120 <= address < 130 for _fc, address, _count in
               [(r[1], r[2], r[3]) for r in peer.requests])


async def test_a_fast_poll_with_a_refused_read_reports_it_and_keeps_the_rest(lane_profile: Profile) -> None:
    peer = Peer(words={("input", 20): 25, ("input", 105): 30})
    async with serve(peer):
        cabinet = _cabinet(lane_profile, peer.port, slots=1, interval_s=60.0, fast_interval_s=1.0)
        await cabinet.fetch()
        peer.exceptions = {2: [2]}  # the discrete read (the flame) refused once
        peer.words[("input", 20)] = 41
        fast = await cabinet.fetch()
    assert fast.watch_only and fast.failed_reads == 1
    assert [e.field for e in fast.errors] == ["(read)"] and "discrete 0+1" in fast.errors[0].reason
    assert fast.reading.cabinet_temperature_c == 41.0


def test_the_lane_follows_the_configured_slots_and_gap_and_is_off_when_it_saves_nothing(
        lane_profile: Profile, tmp_path: Path) -> None:
    from collectors.modbus.device import SAFETY_FIELDS
    from collectors.modbus.planner import plan_reads, restrict_plan

    cabinet = _cabinet(lane_profile, 1, slots=2, max_gap=0, interval_s=60.0, fast_interval_s=1.0)
    assert cabinet.fast_plan == tuple(restrict_plan(plan_reads(lane_profile, 2, max_gap=0), SAFETY_FIELDS))
    assert cabinet.fast_plan != tuple(restrict_plan(plan_reads(lane_profile, 2), SAFETY_FIELDS))
    assert cabinet.fast_plan != tuple(restrict_plan(plan_reads(lane_profile, 3, max_gap=0), SAFETY_FIELDS))
    # a profile of safety fields only: the lane would read what a full poll reads, so there is none
    only_safety = tmp_path / "safety.yaml"
    only_safety.write_text(LANE_PROFILE.replace("  - {field: input_voltage_v, register: input, address: 0, type: u16}\n", "")
                           .replace("  - {field: soc_pct, register: input, offset: 0, type: u16}\n", ""), encoding="utf-8")
    cabinet = _cabinet(load_profile(only_safety), 1, interval_s=60.0, fast_interval_s=1.0)
    assert cabinet.fast_plan is None and cabinet.interval_s == 60.0


async def test_reading_the_plan_with_no_plan_given_reads_the_full_one(profile: Profile) -> None:
    peer = Peer(words={("input", 0): 7})
    async with serve(peer):
        responses, failed = await _cabinet(profile, peer.port).read_plan()
    assert failed == [] and len(responses) == len(_cabinet(profile, 1).plan) and responses[0][0] == 7


def test_a_fresh_fast_field_loses_its_stale_over_range_flag_when_only_the_full_reading_had_flags() -> None:
    from collectors.modbus.device import merge_fast
    from core.model import CabinetReading, SlotReading

    full = CabinetReading("c", "s", "m", 1, cabinet_temperature_c=90.0, input_power_w=5.0,
                          over_range=("cabinet_temperature_c", "input_power_w"),
                          slots=[SlotReading(1, temperature_c=90.0, soc_pct=120.0, over_range=("temperature_c", "soc_pct"))])
    fast = CabinetReading("c", "s", "m", 2, cabinet_temperature_c=30.0, slots=[SlotReading(1, temperature_c=30.0)])
    merged = merge_fast(full, fast, ("cabinet_temperature_c",), ("temperature_c",))
    assert merged.over_range == ("input_power_w",) and merged.slots[0].over_range == ("soc_pct",)
    # and flags only the fast reading has are added to a full reading without any
    plain = CabinetReading("c", "s", "m", 1, slots=[SlotReading(1)])
    hot = CabinetReading("c", "s", "m", 2, over_range=("cabinet_temperature_c",),
                         slots=[SlotReading(1, over_range=("temperature_c",))])
    merged = merge_fast(plain, hot, ("cabinet_temperature_c",), ("temperature_c",))
    assert merged.over_range == ("cabinet_temperature_c",) and merged.slots[0].over_range == ("temperature_c",)


@pytest.mark.parametrize("in_flight", [1, 4])
async def test_a_connection_the_device_closed_between_polls_is_reopened_by_the_next_poll(
        profile: Profile, in_flight: int) -> None:
    """Gateways drop idle connections: the next poll notices before it sends and reconnects, so no poll
    is lost to it (pipelined or not)."""
    peer = Peer(words={("input", 0): 5})
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port, max_in_flight=in_flight)
        await cabinet.fetch()
        for writer in peer.connections:
            writer.close()
        for _ in range(50):  # until the link has seen the close
            if not cabinet._client.connected:
                break
            await asyncio.sleep(0.01)
        report = await cabinet.fetch()
        await cabinet.close()
    assert report.reading.input_voltage_v == 5.0


# -- pipelined reads (max_in_flight) ------------------------------------------------------------------

_WORDS = {("input", 0): 230, ("discrete", 3): 1, ("input", 100): 55, ("input", 104): 66}


def _same_reading(a: Report, b: Report) -> None:
    assert dataclasses.replace(a.reading, timestamp_ns=0) == dataclasses.replace(b.reading, timestamp_ns=0)
    assert (a.requests, a.failed_reads) == (b.requests, b.failed_reads)
    assert [dataclasses.replace(e, reason=re.sub(r":\d+ ", ":port ", e.reason)) for e in a.errors] == \
        [dataclasses.replace(e, reason=re.sub(r":\d+ ", ":port ", e.reason)) for e in b.errors]


async def test_pipelined_reads_are_written_before_any_answer_and_decode_the_same(profile: Profile) -> None:
    """With ``max_in_flight`` 8 the poll's four reads go out together: a device that answers only once it
    has all four (in reverse order) gives the same reading as one read at a time; waiting for each answer
    it gives nothing (the default, for devices that cannot queue)."""
    one = Peer(words=dict(_WORDS))
    async with serve(one):
        expected = await _cabinet(profile, one.port).fetch()
    held = Peer(words=dict(_WORDS), batch=4, reverse=True)
    async with serve(held):
        cabinet = _cabinet(profile, held.port, max_in_flight=8)
        report = await cabinet.fetch()
        await cabinet.close()
    _same_reading(report, expected)
    assert held.requests == one.requests == [(7, 4, 0, 1), (7, 4, 100, 1), (7, 4, 104, 1), (7, 2, 3, 1)]
    assert len(held.connections) == 1
    waiting = Peer(words=dict(_WORDS), batch=4)
    async with serve(waiting):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, waiting.port, timeout_s=0.2).fetch()
    assert info.value.kind == "timeout" and waiting.requests == [(7, 4, 0, 1)]


async def test_at_most_max_in_flight_reads_are_outstanding(profile: Profile) -> None:
    """Two in flight: a device answering pairs serves the poll; one answering only triples never sees the
    third request before the first two are answered, and the poll times out naming the batch."""
    pairs = Peer(words=dict(_WORDS), batch=2)
    async with serve(pairs):
        report = await _cabinet(profile, pairs.port, max_in_flight=2).fetch()
    assert report.reading.input_voltage_v == 230.0 and [s.soc_pct for s in report.reading.slots] == [55.0, 66.0]
    triples = Peer(words=dict(_WORDS), batch=3)
    async with serve(triples):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, triples.port, max_in_flight=2, timeout_s=0.2).fetch()
    assert info.value.kind == "timeout" and str(info.value).startswith("no answer to 2 pipelined reads: ")
    assert len(triples.requests) == 2


async def test_a_refused_read_in_a_batch_loses_only_its_fields_as_one_at_a_time(profile: Profile) -> None:
    reports = []
    for in_flight in (1, 4):
        peer = Peer(words={("input", 0): 230}, exceptions={2: [2]})
        async with serve(peer):
            reports.append(await _cabinet(profile, peer.port, max_in_flight=in_flight).fetch())
    _same_reading(reports[1], reports[0])
    [error] = reports[1].errors
    assert "read_discrete_inputs at address 3 to unit id 7" in error.reason
    assert "answered Modbus exception 2 (illegal data address)" in error.reason


async def test_a_read_answered_busy_in_a_batch_is_asked_again_on_its_own(profile: Profile) -> None:
    """The batch's busy answer is the first attempt: then the same backoff and retries as one at a time."""
    peer = Peer(words=dict(_WORDS), exceptions={2: [6, 6]})
    async with serve(peer):
        started = time.monotonic()
        report = await _cabinet(profile, peer.port, max_in_flight=4, busy_retries=3, busy_backoff_s=0.05).fetch()
        elapsed = time.monotonic() - started
    assert report.reading.door_open is True and report.errors == [] and report.failed_reads == 0
    assert peer.requests == [(7, 4, 0, 1), (7, 4, 100, 1), (7, 4, 104, 1), (7, 2, 3, 1), (7, 2, 3, 1),
                             (7, 2, 3, 1)]
    assert elapsed >= 0.05 * (1 + 2)


@pytest.mark.parametrize("in_flight", [1, 4])
@pytest.mark.parametrize("retries", [0, 2])
async def test_a_device_still_busy_fails_the_poll_after_as_many_attempts_batched_or_not(
        profile: Profile, in_flight: int, retries: int) -> None:
    peer = Peer(words=dict(_WORDS), exceptions={2: [6] * 5})
    async with serve(peer):
        with pytest.raises(PollFailed) as info:
            await _cabinet(profile, peer.port, max_in_flight=in_flight, busy_retries=retries).fetch()
    assert info.value.kind == "busy" and str(info.value).startswith(
        f"read_discrete_inputs at address 3 to unit id 7 on 127.0.0.1:{peer.port} answered Modbus exception 6 "
        "(server device busy)")
    assert [r for r in peer.requests if r[1] == 2] == [(7, 2, 3, 1)] * (retries + 1)


async def test_a_command_to_a_busy_device_gets_every_retry(profile: Profile) -> None:
    """A command's write answered busy once is written again (one retry configured): the cut-off happens."""
    peer = Peer(exceptions={5: [6]})
    async with serve(peer):
        result = await _cabinet(profile, peer.port, busy_retries=1).command("slot_output", slot=1, value=False,
                                                                             actor="rule:x")
    assert result.ok and [r[1] for r in peer.requests] == [5, 5, 1]


async def test_each_answer_of_a_batch_has_the_whole_timeout(profile: Profile) -> None:
    """A device that queues requests but answers them one by one, 0.1 s apart: four answers take 0.4 s,
    more than the 0.25 s timeout, yet none is late, batched or not."""
    for in_flight in (1, 4):
        peer = Peer(words=dict(_WORDS), answer_after_s=0.1)
        async with serve(peer):
            report = await _cabinet(profile, peer.port, max_in_flight=in_flight, timeout_s=0.25).fetch()
        assert report.reading.input_voltage_v == 230.0 and report.errors == []


@pytest.mark.parametrize(("setup", "kind"), [({"silent": True}, "timeout"), ({"hang_up": True}, "connection"),
                                             ({"answer_unit": 9}, "protocol")])
async def test_a_failed_batch_fails_the_poll_and_drops_the_connection(profile: Profile, setup: dict,
                                                                      kind: str) -> None:
    peer = Peer(words=dict(_WORDS), **setup)
    async with serve(peer):
        cabinet = _cabinet(profile, peer.port, max_in_flight=4, timeout_s=0.2)
        with pytest.raises(PollFailed) as info:
            await cabinet.fetch()
        assert info.value.kind == kind and "pipelined reads" in str(info.value)
        assert cabinet._client is None  # the next poll starts on a new connection
