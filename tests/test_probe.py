"""``cascade probe`` against real Modbus servers (the simulator): every field raw and decoded, a wrong
word order flagged with the order that would fit, a wrong unit id named."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from collectors.modbus.profile import PROFILE_DIR, find_profile
from simulators.fleet import build_fleet
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block

CASCADE = Path(sys.executable).with_name("cascade")


@pytest.fixture
async def kestrel():
    fleet = build_fleet([("kestrel-k10", find_profile("kestrel-k10"))], cabinets=1,
                        base_port=free_port_block(1), clock=ManualClock(), seed=4)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    try:
        yield fleet.cabinets[0]
    finally:
        await server.stop()


async def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """The real command in its own process (the simulator serves from this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(str(CASCADE), "probe", *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_every_field_decodes_with_the_right_profile(kestrel, capsys) -> None:
    code, out, _err = await _run(capsys, "--host", "127.0.0.1", "--port", str(kestrel.port), "--profile",
                                 "kestrel-k10", "--json")
    doc = json.loads(out)
    assert code == 0, doc["counts"]
    assert doc["counts"].get("rejected", 0) == 0 and not doc["failed_reads"]
    fields = {(f["where"], f["field"]): f for f in doc["fields"]}
    assert ("cabinet", "door_open") in fields and fields[("cabinet", "door_open")]["verdict"] == "ok"
    assert all(f["raw"] for f in doc["fields"])  # every field shows its registers


async def test_a_wrong_word_order_is_flagged_with_the_order_that_fits(kestrel, capsys, tmp_path: Path) -> None:
    text = (PROFILE_DIR / "kestrel-k10.yaml").read_text(encoding="utf-8")
    assert "CDAB" in text
    wrong = tmp_path / "kestrel-wrong-order.yaml"
    wrong.write_text(text.replace("CDAB", "ABCD"), encoding="utf-8")
    code, out, _err = await _run(capsys, "--host", "127.0.0.1", "--port", str(kestrel.port), "--profile", str(wrong))
    assert code == 3 or "AT LIMIT" in out
    suggestions = re.findall(r"plausible with word_order ([A-D]{4})", out)
    assert suggestions and set(suggestions) <= {"CDAB", "DCBA"} and "CDAB" in suggestions


async def test_a_wrong_unit_id_is_named(kestrel, capsys) -> None:
    code, _out, err = await _run(capsys, "--host", "127.0.0.1", "--port", str(kestrel.port), "--unit", "77",
                                 "--profile", "kestrel-k10", "--timeout", "1", "--pipelining")
    assert code == 1
    assert "unit id 77" in err and "device_id" in err and "Traceback" not in err
    assert "pipelining not tried: the device could not be read" in err


async def test_no_pipelining_advice_while_the_profile_does_not_fit(kestrel, capsys, tmp_path: Path) -> None:
    """Advice drawn from the reads that happened to work would mislead: first the profile."""
    wrong = tmp_path / "kestrel-wrong-order.yaml"
    wrong.write_text((PROFILE_DIR / "kestrel-k10.yaml").read_text(encoding="utf-8").replace("CDAB", "ABCD"),
                     encoding="utf-8")
    code, out, err = await _run(capsys, "--host", "127.0.0.1", "--port", str(kestrel.port), "--profile", str(wrong),
                                "--pipelining", "4")
    assert code == 3 and "REJECTED" in out
    assert "pipelining not tried: the profile does not fit this device yet" in err and "max_in_flight" not in out


async def test_pipelining_is_found_on_a_device_that_queues_requests_and_not_on_one_that_does_not(capsys) -> None:
    """The simulator answers every request of a write; pymodbus's stock server answers only the first
    (docs/simulator.md). The probe tells them apart and names the setting for each."""
    from pymodbus.server import ModbusTcpServer

    from collectors.modbus.device import ModbusCabinet
    from collectors.modbus.probe import format_pipelining, probe_pipelining
    from collectors.modbus.settings import CabinetConfig

    fleet = build_fleet([("kestrel-k10", find_profile("kestrel-k10"))], cabinets=1,
                        base_port=free_port_block(1), clock=ManualClock(), seed=4)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    kestrel = fleet.cabinets[0]
    try:
        code, out, _err = await _run(capsys, "--host", "127.0.0.1", "--port", str(kestrel.port), "--profile",
                                     "kestrel-k10", "--pipelining", "--json")
    finally:
        await server.stop()
    found = json.loads(out)["pipelining"]
    assert code == 0 and found["takes"] == found["plan_reads"] > 1, found
    assert [t["in_flight"] for t in found["tried"]][0] == 2 and all(t["outcome"] == "ok" for t in found["tried"])

    stock = ModbusTcpServer(server._contexts[kestrel.port], address=("127.0.0.1", kestrel.port),
                            ignore_missing_devices=True)
    await stock.serve_forever(background=True)
    try:
        cabinet = ModbusCabinet(CabinetConfig(id="stock", host="127.0.0.1", port=kestrel.port,
                                              device_id=kestrel.device_id, profile="kestrel-k10", timeout_s=0.5),
                                find_profile("kestrel-k10"))
        result = await probe_pipelining(cabinet, 8)
        assert result.takes == 1 and result.tried[0][0] == 2 and "no answer within 0.5 s" in result.tried[0][1]
        assert "keep max_in_flight: 1" in format_pipelining(result)
    finally:
        await stock.shutdown()


def test_pipelining_takes_2_to_32() -> None:
    from collectors.modbus.probe import _depths

    assert _depths(10) == [2, 4, 8, 10] and _depths(8) == [2, 4, 8] and _depths(2) == [2] and _depths(1) == []


async def test_a_read_answered_short_alone_too_is_not_taken_for_a_pipelining_failure() -> None:
    """A device that queues requests but answers one read a word short whatever way it is asked: that
    read is probe's finding (a short read), not pipelining's; the rest are batched and pass."""
    import struct

    from collectors.modbus.device import ModbusCabinet
    from collectors.modbus.planner import plan_reads
    from collectors.modbus.probe import probe_pipelining
    from collectors.modbus.settings import CabinetConfig

    profile = find_profile("kestrel-k10")
    first = plan_reads(profile, profile.slot_count)[0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readexactly(12)
                tid, _p, _l, unit, fc, address, count = struct.unpack(">HHHBBHH", request)
                if address == first.address and fc == {"holding": 3, "input": 4, "coil": 1, "discrete": 2}[
                        first.register_type]:
                    count -= 1  # this read, always one short
                data = bytes(2 * count) if fc >= 3 else bytes((count + 7) // 8)
                writer.write(struct.pack(">HHHBBB", tid, 0, len(data) + 3, unit, fc, len(data)) + data)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cabinet = ModbusCabinet(CabinetConfig(id="short", host="127.0.0.1", port=port, profile="kestrel-k10",
                                              timeout_s=1.0), profile)
        result = await probe_pipelining(cabinet, 4)
    finally:
        server.close()
    assert result.tried and all(outcome == "ok" for _depth, outcome in result.tried), result.tried
    assert result.takes == min(4, result.plan_reads) and result.plan_reads == len(plan_reads(profile, profile.slot_count)) - 1
