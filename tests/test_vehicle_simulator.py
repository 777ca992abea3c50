"""Vehicle simulator: deterministic riders on the Chaoyang street grid, the standard's report rates,
battery swaps that conserve pack ids, reports the ingest decodes cleanly; and end to end against a real
Mosquitto (with the real ingest worker answering refusals) and the real HTTPS ingest (store-and-forward)."""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

import aiomqtt
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from cascade.vehicles import IngestWorker
from collectors.modbus.profile import find_profile
from collectors.vehicles.https import https_app
from collectors.vehicles.ingest import VehicleIngest
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.trust import Device, DeviceRegistry
from collectors.vehicles.wire import Telemetry, decode, encode, to_reading
from simulators.city import chaoyang
from simulators.fleet import build_fleet, free_port_block
from simulators.server import SimulatorServer
from simulators.vehicles import (
    CabinetMirror,
    HttpsTransport,
    MqttTransport,
    Simulation,
    Stats,
    Vehicle,
    add_arguments,
    load_stations,
    place_stations,
    run,
)
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.ports import free_port

T0 = 1_700_000_000.0
CITY = chaoyang()
IDS = [f"V{i:06d}" for i in range(1, 41)]


def simulation(*, seed: int = 3, vehicles: int = 40, start: float = T0, **options: float) -> Simulation:
    stations = place_stations(CITY, [f"S{i:03d}" for i in range(1, 9)], seed=seed)
    return Simulation(CITY, stations, IDS[:vehicles], fleet="bj", seed=seed, start_wall_s=start, **options)


@pytest.fixture(scope="module")
def day() -> tuple[Simulation, list[tuple[Vehicle, Telemetry]], set[str]]:
    """40 vehicles, 8 stations, one simulated day; the pack ids there were at the start."""
    sim = simulation()
    packs = set(sim.packs())
    return sim, sim.step(24 * 3600), packs


def by_vehicle(reports: list[tuple[Vehicle, Telemetry]]) -> dict[str, list[Telemetry]]:
    out: dict[str, list[Telemetry]] = defaultdict(list)
    for vehicle, msg in reports:
        out[vehicle.id].append(msg)
    return out


# -- the model --------------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_reports_and_another_seed_does_not() -> None:
    first = [encode(m) for _, m in simulation(seed=7).step(3 * 3600)]
    again = [encode(m) for _, m in simulation(seed=7).step(3 * 3600)]
    other = [encode(m) for _, m in simulation(seed=8).step(3 * 3600)]
    assert len(first) > 2000
    assert first == again
    assert first != other


def test_the_schedule_does_not_change_the_physics() -> None:
    """Stepping a minute at a time or a day at once gives the same reports (closed-form physics)."""
    whole = [encode(m) for _, m in simulation(vehicles=10).step(6 * 3600)]
    sim = simulation(vehicles=10)
    minutes = [encode(m) for t in range(60, 6 * 3600 + 1, 60) for _, m in sim.step(t)]
    assert whole == minutes


def test_vehicles_ride_on_the_streets_inside_the_district(day) -> None:  # type: ignore[no-untyped-def]
    _sim, reports, _packs = day
    south, west, north, east = CITY.bounds
    assert (south, west, north, east) == (39.905, 116.451, 39.958, 116.55)
    assert CITY.on_street(39.924109, 116.545, tolerance_deg=2e-4)  # Annex A's example position is at a corner
    for _vehicle, msg in reports:
        assert msg.pos is not None and msg.pos.valid
        assert CITY.on_street(msg.pos.lat, msg.pos.lon), (msg.vehicle, msg.pos)
        assert 30 < msg.pos.alt < 50
    for vid, msgs in by_vehicle(reports).items():
        spots = {(m.pos.lat, m.pos.lon) for m in msgs}
        assert len(spots) > 50, f"{vid} hardly moved"
        riding = [m for m in msgs if m.state == "riding"]
        assert riding and all(8 <= m.speed_kmh <= 25 for m in riding)
        assert all(m.speed_kmh == 0 for m in msgs if m.state != "riding")
        # odometer only grows, and by the distance along the streets
        assert all(b.odometer_km >= a.odometer_km for a, b in zip(msgs, msgs[1:]))


def test_local_metric_scale_is_that_of_beijing() -> None:
    assert 111_000 < CITY.m_per_deg_lat < 111_060
    assert 85_300 < CITY.m_per_deg_lon < 85_600  # cos(39.93 degrees) of the equator's 111.3 km
    corner, east = CITY.node(0, 0), CITY.node(len(CITY.ns_streets) - 1, 0)
    assert 8_300 < CITY.distance_m(corner, east) < 8_500  # 116.451 -> 116.55 E


def test_reports_come_once_a_minute_powered_on_and_once_an_hour_off(day) -> None:  # type: ignore[no-untyped-def]
    _sim, reports, _packs = day
    on_gaps, off_gaps = [], []
    for msgs in by_vehicle(reports).values():
        for a, b in zip(msgs, msgs[1:]):
            gap_s = (b.ts - a.ts) / 1000
            (on_gaps if a.power else off_gaps).append(gap_s)
            assert b.seq == a.seq + 1
    # a power change reports at once, so a gap can be shorter, never longer
    assert max(on_gaps) <= 60.001 and statistics.median(on_gaps) == pytest.approx(60, abs=0.002)
    assert max(off_gaps) <= 3600.001 and max(off_gaps) == pytest.approx(3600, abs=0.002)
    powered = sum(1 for _, m in reports if m.power)
    assert powered > 20 * len(off_gaps)  # riding days: mostly on
    # per vehicle and clock hour, when the vehicle stayed on (or off) from an hour before to the end:
    # 60 reports in an hour powered on, 1 in an hour off
    whole_hours: dict[bool, list[int]] = {True: [], False: []}
    for msgs in by_vehicle(reports).values():
        for h in range(2, 24):
            around = [m for m in msgs if T0 + (h - 1) * 3600 <= m.ts / 1000 < T0 + (h + 1) * 3600]
            powers = {m.power for m in around}
            if len(powers) == 1:
                whole_hours[powers.pop()].append(sum(1 for m in around if m.ts / 1000 >= T0 + h * 3600))
    assert len(whole_hours[True]) > 50 and set(whole_hours[True]) == {60}
    assert len(whole_hours[False]) > 5 and set(whole_hours[False]) == {1}


def test_speed_and_rate_scale_keep_report_times_on_the_wall_clock() -> None:
    sim = simulation(vehicles=5, speed=20, rate_scale=10)
    reports = sim.step(3600)  # one simulated hour = three wall-clock minutes
    msgs = by_vehicle(reports)
    assert all(T0 * 1000 <= m.ts <= (T0 + 180) * 1000 for _, m in reports)
    gaps = [(b.ts - a.ts) / 1000 for ms in msgs.values() for a, b in zip(ms, ms[1:]) if a.power]
    assert statistics.median(gaps) == pytest.approx(6 / 20, abs=0.002)  # 6 simulated s at 20x
    assert len(reports) > 5 * 400  # ten times the standard rate (5 x 60 an hour)


def test_riding_drains_the_pack_warms_it_and_draws_current(day) -> None:  # type: ignore[no-untyped-def]
    sim, reports, _packs = day
    per_km = []
    for msgs in by_vehicle(reports).values():
        for a, b in zip(msgs, msgs[1:]):
            if a.battery.id == b.battery.id and a.state == b.state == "riding" and b.odometer_km - a.odometer_km > 0.2:
                per_km.append((a.battery.soc_pct - b.battery.soc_pct) / (b.odometer_km - a.odometer_km))
    assert 0.5 <= statistics.median(per_km) <= 1.2  # % per km on a 48 V-class pack
    riding = [m.battery for _, m in reports if m.state == "riding"]
    assert all(-25 <= b.current_a <= -0.5 for b in riding)
    assert -10 <= statistics.mean(b.current_a for b in riding) <= -2
    # The reported current integrates to the charge the SOC says was used (coulomb counting of the
    # battery-health analysis reads it): within 15 % over every riding stretch of the day.
    used_ah = counted_ah = 0.0
    for msgs in by_vehicle(reports).values():
        for a, b in zip(msgs, msgs[1:]):
            if a.battery.id == b.battery.id and a.state == b.state == "riding":
                capacity_ah = a.battery.nominal_ah * a.battery.soh_pct / 100  # what is left of it
                used_ah += (a.battery.soc_pct - b.battery.soc_pct) / 100 * capacity_ah
                counted_ah += -(a.battery.current_a + b.battery.current_a) / 2 * (b.ts - a.ts) / 3.6e6
    assert used_ah > 0 and 0.85 <= counted_ah / used_ah <= 1.15, (counted_ah, used_ah)
    assert all(b.state == "discharging" for b in riding)
    off = [m.battery for _, m in reports if not m.power]
    def warmth(msg: Telemetry) -> float:  # the pack above the air
        return msg.battery.temperature_c - sim.ambient_c(msg.ts / 1000 - T0)

    riding_warmth = statistics.mean(warmth(m) for _, m in reports if m.state == "riding")
    cooled = [warmth(b) for ms in by_vehicle(reports).values() for a, b in zip(ms, ms[1:]) if not (a.power or b.power)]
    assert 3 < riding_warmth < 8  # a few degrees above the air while riding
    assert len(cooled) > 20 and statistics.mean(cooled) < 1  # back to the air after an hour off
    for b in riding + off:  # voltage follows SOC, within the chemistry's window
        low, high = (13 * 2.9, 13 * 4.2) if b.chemistry == "NMC" else (16 * 2.4, 16 * 3.65)
        assert low < b.voltage_v < high, b
        assert b.cell_min_v < b.voltage_v / b.cells < b.cell_max_v
    nmc = sorted((b.soc_pct, b.voltage_v) for b in off if b.chemistry == "NMC")
    assert nmc[-1][1] > nmc[0][1] + 3  # a full NMC pack stands volts above an empty one
    assert min(b.soc_pct for b in riding) < 12  # late swappers ride low (exercises soc_low)


def test_every_report_decodes_and_reads_without_a_problem(day) -> None:  # type: ignore[no-untyped-def]
    _sim, reports, _packs = day
    for _vehicle, msg in reports:
        data = encode(msg)
        assert len(data) < 900
        decoded = decode(data)
        assert decoded == msg
        reading, problems = to_reading(decoded, fleet="bj", received_ns=0)
        assert problems == []
        assert reading.over_range == () and reading.battery.over_range == ()
        assert reading.battery.battery_id == msg.battery.id


def test_a_swap_moves_the_pack_to_the_station_and_the_fullest_into_the_vehicle(day) -> None:  # type: ignore[no-untyped-def]
    sim, reports, packs_at_start = day
    assert set(sim.packs()) == packs_at_start  # conserved, and packs() proves none is in two places
    sim2 = simulation()
    swaps = []
    for t in range(600, 24 * 3600 + 1, 600):
        sim2.step(t)
        for swap in sim2.swaps:
            station = next(s for s in sim2.stations if s.id == swap.station)
            vehicle = next(v for v in sim2.vehicles if v.id == swap.vehicle)
            where = sim2.packs()
            # at the moment it was made (before later swaps moved the packs on)
            if where.get(swap.docked.id) == f"{swap.station}/{swap.slot}" and vehicle.pack is swap.taken:
                assert station.slots[swap.slot - 1] is swap.docked
                swaps.append(swap)
            assert swap.taken.soc > swap.docked.soc + 0.3
        sim2.swaps.clear()
    assert sim2.swap_count > 20 and len(swaps) > 10
    assert set(sim2.packs()) == packs_at_start
    # the vehicle reports its new pack from the swap on, the pack keeps its identity
    first = swaps[0]
    after = [m for v, m in reports if v.id == first.vehicle and m.ts >= int(sim.wall_s(first.t) * 1000)]
    assert after[0].battery.id == first.taken.id
    assert after[0].battery.soh_pct == first.taken.soh_pct and after[0].battery.cycles == first.taken.cycles
    # the same pack later in another vehicle (packs circulate)
    riders: dict[str, set[str]] = defaultdict(set)
    for vehicle, msg in reports:
        riders[msg.battery.id].add(vehicle.id)
    assert any(len(r) > 1 for r in riders.values())


def test_low_packs_ride_to_the_nearest_station() -> None:
    sim = simulation(vehicles=20)
    seen = 0
    for t in range(60, 24 * 3600, 60):
        sim.step(t)
        for v in sim.vehicles:
            act = v.activity
            if act.kind == "ride" and act.station is not None and act.start > t - 60:
                start = act.route.nodes[0]
                best = min(CITY.distance_m(start, s.node) for s in sim.stations)
                assert CITY.distance_m(start, act.station.node) == best
                assert act.route.nodes[-1] == act.station.node
                seen += 1
    assert seen > 5


def test_stations_are_the_cabinets_of_the_fleet_file(tmp_path: Path) -> None:
    fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=6, slots=8,
                        clock=lambda: T0)
    path = fleet.write_fleet_file(tmp_path / "fleet.yaml")
    stations, where = load_stations(path, CITY, seed=1)
    assert [s.id for s in stations] == ["C0001", "C0002", "C0003", "C0004", "C0005", "C0006"]
    assert all(len(s.slots) == 8 and s.cabinet for s in stations)
    assert len({s.node for s in stations}) == 6 and "placed on the grid" in where
    path.write_text("cabinets:\n- {id: C0001, slots: 4, lat: 39.9241, lon: 116.5446}\n")
    (station,), where = load_stations(path, CITY)
    assert CITY.point(station.node) == (39.924, 116.545) and "1 at their fleet-file coordinates" in where


async def test_bad_options_stop_start_up_with_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert await run(parser.parse_args(["--devices", str(tmp_path / "none.json"), "--mqtt", "127.0.0.1:1"])) == 2
    assert "cascade devices provision" in caplog.text
    assert await run(parser.parse_args(["--devices", str(tmp_path / "none.json")])) == 2
    assert "Fix: give --mqtt HOST:PORT and/or --https URL" in caplog.text
    assert await run(parser.parse_args(["--mqtt", "nohost", "--devices", "x"])) == 2
    assert "is not HOST:PORT" in caplog.text


# -- end to end -------------------------------------------------------------------------------------------------


async def test_twenty_vehicles_report_over_mqtt_to_the_broker(mosquitto: Mosquitto, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--vehicles", "20", "--devices", str(mosquitto.paths["devices"]),
                              "--mqtt", f"127.0.0.1:{mosquitto.port}", "--fleet-file", str(tmp_path / "no.yaml"),
                              "--speed", "30", "--duration", "4", "--status-interval", "1"])
    seen: dict[str, Telemetry] = {}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="ingest", password=mosquitto.ingest_password,
                              identifier="test-ingest", protocol=aiomqtt.ProtocolVersion.V5) as ingest:
        await ingest.subscribe("cascade/v1/+/+/telemetry", qos=1)
        simulator = asyncio.create_task(run(args))

        async def collect() -> None:
            async for message in ingest.messages:
                msg = decode(message.payload)  # type: ignore[arg-type]
                assert message.topic.value == f"cascade/v1/bj/{msg.vehicle}/telemetry"
                assert abs(msg.ts / 1000 - time.time()) < 5  # "now", whatever the speed
                seen[msg.vehicle] = msg
                if len(seen) == 20:
                    return

        await asyncio.wait_for(collect(), 8)
        assert await asyncio.wait_for(simulator, 8) == 0
    assert sorted(seen) == mosquitto.device_ids()[:20]
    status = capsys.readouterr().out.strip().splitlines()
    assert len(status) >= 3 and all(line.startswith("vehicles: ") for line in status)
    sent = int(status[-1].split("sent mqtt ")[1].split(",")[0])
    assert sent >= 20 and "refused 0" in status[-1]


async def test_refusals_on_the_reject_topic_are_counted_by_reason(mosquitto: Mosquitto) -> None:
    """Reports an hour old (a device clock gone wrong) reach the real ingest worker, which refuses them as
    stale and says so on each vehicle's reject topic."""
    settings = VehicleSettings(devices=str(mosquitto.paths["devices"]), metrics_port=0,
                               mqtt=MqttSettings(port=mosquitto.port, password=mosquitto.ingest_password))
    registry = DeviceRegistry.load(mosquitto.paths["devices"])
    stats = Stats()
    async with IngestWorker(settings, None, registry=CollectorRegistry()) as worker:
        await asyncio.wait_for(worker.mqtt.connected.wait(), 5)
        sim = simulation(vehicles=3, start=time.time() - 3600)
        transport = MqttTransport("127.0.0.1", mosquitto.port, registry, stats, in_flight=4)
        sender = asyncio.create_task(transport.run())
        try:
            reports = sim.step(120)
            for vehicle, msg in reports:
                transport.submit(vehicle, encode(msg))
            deadline = time.monotonic() + 8
            while (stats.refused["stale"] < 3 or stats.sent["mqtt"] < len(reports)) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await transport.close()
    assert stats.refused["stale"] == 3  # one answer per vehicle (the worker rate-limits its answers)
    assert stats.sent["mqtt"] == len(reports) >= 3 and not stats.lost
    assert worker.ingest.metrics.rejected.labels("mqtt", "stale")._value.get() == len(reports)


async def test_https_buffers_while_the_server_is_down_and_forwards_later(tmp_path: Path) -> None:
    devices = DeviceRegistry([Device(vid, "bj", bytes.fromhex("ab" * 16)) for vid in IDS[:4]])
    stats = Stats()
    port = free_port()
    transport = HttpsTransport(f"http://127.0.0.1:{port}", devices, stats)
    sender = asyncio.create_task(transport.run())
    sim = simulation(vehicles=4, start=time.time() - 900)  # reports up to 15 minutes old: store-and-forward
    reports = sim.step(600)
    server = None
    try:
        for vehicle, msg in reports:
            transport.submit(vehicle, encode(msg))
        while transport.reachable:
            await asyncio.sleep(0.02)
        assert transport.buffered == len(reports) and stats.sent["https"] == 0
        ingest = VehicleIngest(devices, sink=None)
        server = TestServer(https_app(HttpsSettings(), ingest), host="127.0.0.1", port=port)
        await server.start_server()
        deadline = time.monotonic() + 8
        while stats.sent["https"] < len(reports) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if server is not None:
            await server.close()
    assert stats.sent["https"] == len(reports) > 30 and transport.buffered == 0
    assert ingest.metrics.accepted.labels("https")._value.get() == len(reports)
    assert not stats.refused and not stats.lost
    assert math.isfinite(sim.next_due())


async def test_a_swap_at_a_simulated_cabinet_docks_the_pack_in_its_modbus_slot(tmp_path: Path) -> None:
    fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=3, slots=6,
                        base_port=free_port_block(3))
    server = SimulatorServer(fleet, control_port=free_port())
    stations, _where = load_stations(fleet.write_fleet_file(tmp_path / "fleet.yaml"), CITY)
    sim = Simulation(CITY, stations, IDS, fleet="bj", seed=2, start_wall_s=T0)
    t = 0
    while not sim.swaps:
        t += 600
        sim.step(t)
    swap = sim.swaps[0]
    stats = Stats()
    mirror = CabinetMirror(f"http://127.0.0.1:{server.control_port}", stats)
    await server.start()
    task = asyncio.create_task(mirror.run())
    try:
        mirror.submit(swap)
        deadline = time.monotonic() + 5
        while not stats.mirrored and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    assert stats.mirrored == {"ok": 1}
    slot = fleet.by_id[swap.station].state.slots[swap.slot - 1]
    assert slot.battery is not None and slot.battery.battery_id == swap.docked.id
    assert slot.battery.chemistry.name == swap.docked.chemistry.name and slot.battery.cells == swap.docked.cells
    assert slot.battery.soc == pytest.approx(swap.docked.soc, abs=0.001)
    assert fleet.runs == {}  # the insert scenario is deleted once applied; the pack stays
