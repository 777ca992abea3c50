"""Core pipeline end to end: simulator (real pymodbus servers) → collector → real InfluxDB,
real Prometheus scraping /metrics, outages and garbage (issue: core pipeline, item 11)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from collectors.modbus.profile import FieldSpec, find_profile
from core.model import CabinetReading
from exporters.influx.sink import InfluxConfig
from simulators.fleet import Fleet, build_fleet
from simulators.register_bank import reported_value
from simulators.scenarios import parse_scenario
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block

PROFILES = ("reference-cabinet", "volta-s8")


@dataclass
class Stack:
    fleet: Fleet
    server: SimulatorServer
    config: AppConfig


@pytest.fixture
async def stack(influxdb, tmp_path) -> AsyncIterator[Stack]:
    profiles = [(name, find_profile(name)) for name in PROFILES]
    fleet = build_fleet(profiles, cabinets=4, base_port=free_port_block(4), clock=ManualClock(), seed=3)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    cabinets = fleet.collector_configs(interval_s=0.3, timeout_s=0.5)
    influx = InfluxConfig(url=influxdb.url, database=influxdb.database, flush_interval_s=0.2,
                          spool_dir=str(tmp_path / "spool"))
    config = AppConfig(source="test", cabinets=cabinets, profiles=dict(profiles), influxdb=influx,
                       metrics_port=0, status_interval_s=0, backoff_cap_s=1.0)
    try:
        yield Stack(fleet, server, config)
    finally:
        await server.stop()


def _close(spec: FieldSpec, stored, expected) -> bool:
    if expected is None or expected == "":
        return stored is None
    if spec.data_type == "string":
        return stored == str(expected)[: spec.words * 2]
    if spec.data_type == "bool":
        return bool(stored) == bool(expected)
    tolerance = abs(spec.scale) * 0.51 if spec.data_type != "f32" else 1e-4 * max(1.0, abs(float(expected)))
    return stored is not None and math.isclose(float(stored), float(expected), abs_tol=tolerance)


async def _run_for(pipeline: Pipeline, seconds: float) -> None:
    async with pipeline:
        await asyncio.sleep(seconds)


async def test_every_field_of_both_profiles_is_stored(stack: Stack, influxdb) -> None:
    polls: list[CabinetReading] = []
    pipeline = Pipeline(stack.config, registry=CollectorRegistry(), hooks=[polls.append], seed=1)
    await _run_for(pipeline, 2.0)
    assert {r.cabinet_id for r in polls} == {c.cabinet_id for c in stack.fleet.cabinets}
    checked = 0
    for cab in stack.fleet.cabinets:
        profile = find_profile(cab.profile_ref)
        now = stack.fleet.clock()
        rows = influxdb.query(f"SELECT * FROM cabinet WHERE cabinet = '{cab.cabinet_id}' ORDER BY time DESC LIMIT 1")
        assert rows, f"no cabinet point for {cab.cabinet_id}"
        for spec in profile.cabinet_fields:
            expected = reported_value(cab.state, None, spec.field, now)
            assert _close(spec, rows[0].get(spec.field), expected), \
                f"{cab.profile_ref} {cab.cabinet_id} {spec.field}: stored {rows[0].get(spec.field)!r}, " \
                f"simulator {expected!r}"
            checked += 1
        for slot in range(1, cab.slot_count + 1):
            rows = influxdb.query(f"SELECT * FROM slot WHERE cabinet = '{cab.cabinet_id}' AND slot = '{slot}' "
                                  "ORDER BY time DESC LIMIT 1")
            assert rows, f"no slot point for {cab.cabinet_id}/{slot}"
            for spec in profile.slot_fields:
                expected = reported_value(cab.state, slot, spec.field, now)
                assert _close(spec, rows[0].get(spec.field), expected), \
                    f"{cab.profile_ref} {cab.cabinet_id}/{slot} {spec.field}: stored " \
                    f"{rows[0].get(spec.field)!r}, simulator {expected!r}"
                checked += 1
    assert checked > 300


async def test_influxdb_outage_loses_nothing(stack: Stack, influxdb) -> None:
    readings: list[CabinetReading] = []
    pipeline = Pipeline(stack.config, registry=CollectorRegistry(), hooks=[readings.append], seed=2)
    async with pipeline:
        await asyncio.sleep(1.0)
        influxdb.stop()
        await asyncio.sleep(1.5)
        spooled = pipeline.sink.stats.lines_spooled + pipeline.sink.stats.buffered_lines
        assert spooled > 0, "readings made while InfluxDB was down must be held"
        influxdb.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            stats = pipeline.sink.stats
            if stats.up and stats.spool_lines == 0 and stats.lines_replayed > 0:
                break
        hooks_done = len(readings)
    stats = pipeline.sink.stats
    expected_slots = sum(len(r.slots) for r in readings[:hooks_done])
    stored = influxdb.query("SELECT count(voltage_v) FROM slot")[0]["count"]
    assert stats.lines_dropped == 0
    assert stats.lines_spooled == stats.lines_replayed > 0
    assert stored == expected_slots, f"stored {stored} slot points, polled {expected_slots}"
    stored_cabinets = influxdb.query("SELECT count(input_voltage_v) FROM cabinet")[0]["count"]
    assert stored_cabinets == len(readings)


async def test_unreachable_cabinet_and_garbage_do_not_stop_the_others(stack: Stack, influxdb) -> None:
    fleet = stack.fleet
    down, noisy = fleet.cabinets[1], fleet.cabinets[2]
    fleet.start_scenario(parse_scenario(
        f"name: down\ntarget: {{cabinet: {down.cabinet_id}}}\nsteps:\n  - {{at: 0s, unreachable: 1h}}\n"))
    fleet.start_scenario(parse_scenario(
        f"name: junk\ntarget: {{cabinet: {noisy.cabinet_id}, slot: 1}}\n"
        "steps:\n  - {at: 0s, garbage: [voltage_v, soc_pct]}\n"))
    await stack.server.reconcile()
    registry = CollectorRegistry()
    pipeline = Pipeline(stack.config, registry=registry, seed=3)
    await _run_for(pipeline, 2.5)

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert sample("cascade_device_up", site=down.state.site, cabinet=down.cabinet_id) == 0
    assert sum(sample("cascade_poll_errors_total", source="modbus", kind=k)
               for k in ("connect", "connection", "timeout")) >= 1
    assert sample("cascade_decode_errors_total", field="voltage_v") >= 1
    assert sample("cascade_decode_errors_total", field="soc_pct") >= 1
    for cab in (fleet.cabinets[0], fleet.cabinets[3], noisy):
        assert sample("cascade_device_up", site=cab.state.site, cabinet=cab.cabinet_id) == 1
        assert influxdb.query(f"SELECT count(temperature_c) FROM slot WHERE cabinet = '{cab.cabinet_id}'")
    # The garbage slot keeps its good fields; only the garbage ones are absent.
    rows = influxdb.query(f"SELECT voltage_v, soc_pct, temperature_c FROM slot WHERE cabinet = "
                          f"'{noisy.cabinet_id}' AND slot = '1'")
    assert rows and all(r["voltage_v"] is None and r["soc_pct"] is None for r in rows)
    assert any(r["temperature_c"] is not None for r in rows)
    assert not influxdb.query(f"SELECT * FROM slot WHERE cabinet = '{down.cabinet_id}'")


async def test_real_prometheus_scrapes_metrics(stack: Stack, prometheus_factory) -> None:
    pipeline = Pipeline(stack.config, registry=CollectorRegistry(), seed=4)
    async with pipeline:
        prom = prometheus_factory(
            "global: {scrape_interval: 1s}\nscrape_configs:\n"
            f"  - job_name: cascade\n    static_configs: [{{targets: ['127.0.0.1:{pipeline.metrics_port}']}}]\n")
        deadline = time.monotonic() + 30
        result: list = []
        while time.monotonic() < deadline and len(result) < 4:
            await asyncio.sleep(0.5)
            result = await asyncio.to_thread(prom.query, "cascade_device_up == 1")
        assert len(result) == 4
        readings = await asyncio.to_thread(prom.query, "cascade_readings_total")
        assert readings and float(readings[0]["value"][1]) > 0
        temps = await asyncio.to_thread(prom.query, "cascade_cabinet_battery_temperature_max_celsius")
        assert {r["metric"]["cabinet"] for r in temps} == {c.cabinet_id for c in stack.fleet.cabinets}


async def test_a_point_that_cannot_be_encoded_is_counted_and_the_rest_is_written(stack: Stack, influxdb) -> None:
    registry = CollectorRegistry()
    pipeline = Pipeline(stack.config, registry=registry, seed=5)
    original = pipeline.handle

    async def handle_with_bad_string(report):
        if report.reading.slots:
            report.reading.slots[0].battery_maker = "line\nbreak"  # line protocol cannot carry this
        await original(report)

    pipeline.handle = handle_with_bad_string
    await _run_for(pipeline, 1.5)
    assert registry.get_sample_value("cascade_line_encode_errors_total") >= 1
    rows = influxdb.query("SELECT count(voltage_v) FROM slot WHERE slot = '2'")
    assert rows and rows[0]["count"] > 0


async def test_a_wrong_unit_id_says_which_unit_and_function_and_what_to_check(stack: Stack) -> None:
    """A gateway answers a unit it does not know with a Modbus exception; the error must name the
    unit id tried and point at it, not read like a broken device."""
    from dataclasses import replace

    from collectors.modbus.device import ModbusCabinet
    from collectors.runner import PollFailed

    good = stack.config.cabinets[0]
    wrong = replace(good, device_id=good.device_id + 40)
    cabinet = ModbusCabinet(wrong, stack.config.profiles[wrong.profile])
    try:
        with pytest.raises(PollFailed) as failed:
            await cabinet.fetch()
    finally:
        await cabinet.close()
    text = str(failed.value)
    assert f"unit id {wrong.device_id} on {wrong.host}:{wrong.port}" in text
    assert "read_" in text and "gateway path unavailable" in text and "device_id" in text
