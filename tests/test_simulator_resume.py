"""A restarted simulator resumes the scenarios that were running (`make run` stopped and started again):
a fault nobody fixed is still there, so the collector never pages "resolved" for it."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from collectors.modbus.decode import decode_poll
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import find_profile
from simulators.fleet import build_fleet
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port, free_port_block

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"


def _slot_temperature(fleet, cabinet_id: str, slot: int) -> float | None:
    cab = fleet.by_id[cabinet_id]
    plan = plan_reads(cab.profile, cab.slot_count)
    responses = [fleet.read(cab, r.register_type, r.address, r.count) for r in plan]
    reading, _errors = decode_poll(plan, responses, cabinet_id=cab.cabinet_id, site="s", model="m",
                                   slot_count=cab.slot_count, timestamp_ns=0)
    return reading.slots[slot - 1].temperature_c


async def test_a_restarted_simulator_resumes_its_running_scenarios(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "simulator-scenarios.json"
    profile = ("reference-cabinet", find_profile("reference-cabinet"))

    def fleet():
        return build_fleet([profile], cabinets=8, base_port=free_port_block(8), clock=clock)

    first = fleet()
    server = SimulatorServer(first, control_port=free_port(), state_path=state)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{server.control_url}/scenarios",
                                      data=(SCENARIOS / "over_temperature.yaml").read_text())
            assert resp.status == 201, await resp.text()
        clock.advance(300)  # halfway up the 10-minute ramp to 70 degC
        before = _slot_temperature(first, "C0006", 4)
        assert before is not None and before > 40  # from ~25 degC at rest
    finally:
        await server.stop()

    clock.advance(60)  # the stack is down a minute, then starts again: a fresh fleet, the same state file
    second = fleet()
    server = SimulatorServer(second, control_port=0, state_path=state)
    await server.start()
    try:
        [run] = second.runs.values()
        assert run.scenario.name == "over_temperature" and run.started_s == clock.now - 360
        after = _slot_temperature(second, "C0006", 4)
        assert after is not None and after >= before  # still overheating, further up the ramp
    finally:
        await server.stop()


async def test_a_deleted_scenario_is_not_resumed_and_a_bad_state_file_is_ignored(tmp_path: Path) -> None:
    clock = ManualClock()
    state = tmp_path / "simulator-scenarios.json"
    profile = ("reference-cabinet", find_profile("reference-cabinet"))
    fleet = build_fleet([profile], cabinets=8, base_port=free_port_block(8), clock=clock)
    server = SimulatorServer(fleet, control_port=free_port(), state_path=state)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{server.control_url}/scenarios",
                                      data=(SCENARIOS / "over_temperature.yaml").read_text())
            run_id = (await resp.json())["id"]
            assert (await session.delete(f"{server.control_url}/scenarios/{run_id}")).status == 200
    finally:
        await server.stop()
    again = SimulatorServer(build_fleet([profile], cabinets=8, base_port=free_port_block(8), clock=clock),
                            state_path=state)
    assert again.resume() == []
    state.write_text("{not json")
    assert SimulatorServer(build_fleet([profile], cabinets=8, base_port=free_port_block(8), clock=clock),
                           state_path=state).resume() == []
