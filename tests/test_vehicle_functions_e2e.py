"""The vehicle functions end to end, one simulator scenario each (docs/vehicle-simulator.md, "Scenarios"):
a scripted vehicle of the real simulator reports over a real Mosquitto; `cascade run`'s vehicle watch feeds
the warning engine and the alert service; the alert reaches a real Alertmanager (shipped routing) and a
real InfluxDB (the alert point, with its regulator category), and an ingest worker stores the reports and
answers with time calibrations. An ordinary rider rides alongside and must raise no vehicle alarm.

Simulated time runs 60 times faster than the clock (a report a second while powered on): the engine's
durations (``for``) run on the simulated clock, the vehicle watch's report intervals are scaled to match
(``vehicles.functions.report_on_s``), and report times stay "now", as in ``cascade simulate-vehicles
--speed 60``. The command acknowledgement of the theft scenario belongs to the vehicle command tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.categories import category_of
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.state import Transition
from cascade.app import alert_service_for
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from cascade.vehicles import IngestWorker
from collectors.vehicles.functions import VehicleFunctions
from collectors.vehicles.settings import MqttSettings, VehicleSettings
from collectors.vehicles.wire import encode
from core.model import CabinetReading
from exporters.influx.sink import InfluxConfig
from notifier.messages import compose
from notifier.webhook import WebhookAlert
from simulators.city import chaoyang
from simulators.vehicles import MqttTransport, Simulation, Stats, place_stations
from tests.fixtures.influxdb import InfluxDB
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.prom import AlertmanagerServer

SPEED = 60.0
CITY = chaoyang()
SCRIPTED, RIDER = "V000001", "V000002"
FENCE_M, REMINDER_PCT = 200.0, 20.0
VEHICLE_RULES = {r.id for r in load_rules().values() if r.scope == "vehicle"}


class RecordingEngine(Engine):
    """The shipped engine, keeping every transition it returns (the vehicle command rides on them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Transition] = []

    def evaluate(self, reading: CabinetReading) -> list[Transition]:
        out = super().evaluate(reading)
        self.seen.extend(out)
        return out


@dataclass
class Run:
    """What one scenario run left behind."""

    engine: RecordingEngine
    am: AlertmanagerServer
    influx: InfluxDB
    sim: Simulation
    stats: Stats
    am_alerts: list[dict[str, Any]] = field(default_factory=list)

    def raised(self, vehicle: str) -> list[tuple[str, int, str | None]]:
        return [(t.rule, t.to_level, t.vehicle_command) for t in self.engine.seen
                if t.target.cabinet == vehicle and t.kind in ("raise", "escalate")]


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in {timeout_s:.0f} s: {what}")


async def _scenario(kind: str, mosquitto: Mosquitto, influxdb: InfluxDB, am: AlertmanagerServer, tmp_path: Path,
                    want: tuple[str, int], *, at: float = 30.0, rider_clock_offset_ms: int = 0) -> Run:
    """Run ``kind`` on the scripted vehicle next to an ordinary rider until ``want`` (rule, level) is raised on
    the scripted vehicle and has reached Alertmanager."""
    functions = VehicleFunctions(defaults={"low_soc_pct": REMINDER_PCT, "fence_radius_m": FENCE_M},
                                 report_on_s=60 / SPEED, report_off_s=3600 / SPEED, silence_check_s=0.25)
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt, metrics_port=0, rate_per_s=10,
                               functions=functions)
    influx = InfluxConfig(url=influxdb.url, database=influxdb.database, spool_dir=str(tmp_path / "spool"),
                          flush_interval_s=0.2)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=influx,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    start = time.time()
    engine = RecordingEngine(load_rules(), elapsed=lambda: (time.time() - start) * SPEED)  # `for` in simulated time
    sim = Simulation(CITY, place_stations(CITY, ["S001", "S002", "S003"], seed=4), [SCRIPTED, RIDER], fleet="bj",
                     seed=4, start_wall_s=start, speed=SPEED)
    sim.script(SCRIPTED, kind, at=at)
    sim.vehicles[1].clock_offset_ms = rider_clock_offset_ms
    stats = Stats()
    transport = MqttTransport("127.0.0.1", mosquitto.port, mosquitto.devices, stats, in_flight=4)
    transport.on_calibration = sim.calibrate
    worker_influx = InfluxConfig(url=influxdb.url, database=influxdb.database, spool_dir=str(tmp_path / "spool-w"),
                                 flush_interval_s=0.2)
    run = Run(engine, am, influxdb, sim, stats)
    async with IngestWorker(vehicles, worker_influx, worker=1, registry=CollectorRegistry()) as worker, \
            Pipeline(config, registry=CollectorRegistry()) as pipeline:
        service = alert_service_for(pipeline, engine, alertmanager_url=am.url, policy=ActionPolicy(),
                                    resend_interval_s=5)
        async with service:
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(watch.mqtt.connected.wait(), 10)
            assert worker.mqtt is not None
            await asyncio.wait_for(worker.mqtt.connected.wait(), 10)
            tasks = [asyncio.create_task(transport.run()), asyncio.create_task(_drive(sim, transport))]
            try:
                await _until(lambda: any((r, lv) == want for r, lv, _ in run.raised(SCRIPTED)), 90,
                             f"{want} raised on {SCRIPTED}; raised: {run.raised(SCRIPTED)}")

                def in_am() -> bool:
                    # at the wanted level: a lower one pushed earlier may still be what Alertmanager holds
                    run.am_alerts = [a for a in am.alerts() if a["labels"].get("alertname") == want[0]
                                     and a["labels"].get("vehicle") == SCRIPTED
                                     and a["labels"].get("level") == str(want[1])]
                    return bool(run.am_alerts)

                await _until(in_am, 30, f"{want[0]} of {SCRIPTED} in Alertmanager")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await transport.close()
    return run


async def _drive(sim: Simulation, transport: MqttTransport) -> None:
    """The simulator's driver: simulated time follows the wall clock at ``SPEED``."""
    while True:
        for vehicle, msg in sim.step((time.time() - sim.start_wall_s) * sim.speed):
            transport.submit(vehicle, encode(msg))
        await asyncio.sleep(0.05)


def _rider_quiet(run: Run) -> None:
    """The ordinary rider beside the scenario raised no vehicle alarm (no false alarm from normal riding)."""
    assert not [r for r in run.raised(RIDER) if r[0] in VEHICLE_RULES], run.raised(RIDER)


def _stored_alert(run: Run, rule: str) -> list[dict[str, Any]]:
    return run.influx.query(f"SELECT * FROM \"alert\" WHERE \"rule\" = '{rule}' AND \"cabinet\" = '{SCRIPTED}'")


@pytest.mark.timeout(240)
async def test_theft_while_armed_raises_the_wheel_motion_alarm_asks_for_a_motor_lock_and_tells_the_user(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("theft", mosquitto, influxdb, alertmanager, tmp_path, ("wheel_motion_armed", 2))
    assert ("wheel_motion_armed", 2, "motor_lock") in run.raised(SCRIPTED)  # the command service sends it
    labels = run.am_alerts[0]["labels"]
    assert (labels["level"], labels["severity"], labels["site"], labels["cabinet"]) == ("2", "warning", "bj", SCRIPTED)
    summary = run.am_alerts[0]["annotations"]["summary"]
    assert "设防轮动报警" in summary and f"bj/{SCRIPTED}号车" in summary and "电池" not in summary
    # What reaches the user's phone: the vehicle, the alarm and what to do, in Chinese.
    alert = WebhookAlert("firing", dict(labels), dict(run.am_alerts[0]["annotations"]), "", "", "", "")
    messages = compose(alert, "zh_CN", dt.UTC)
    assert "设防轮动报警" in messages["sms"] and f"{SCRIPTED}号车" in messages["voice"]
    assert "号车的电池" not in messages["voice"]  # the vehicle itself, not its battery
    await _until(lambda: bool(_stored_alert(run, "wheel_motion_armed")), 15, "the alert point in InfluxDB")
    assert _stored_alert(run, "wheel_motion_armed")[0]["category"] == category_of("wheel_motion_armed") == \
        "vehicle_theft"
    # The ingest worker stored the arming state with every report.
    rows = influxdb.query(f"SELECT \"armed\", \"speed_kmh\" FROM \"vehicle\" WHERE \"vehicle\" = '{SCRIPTED}'")
    assert rows and all(r["armed"] is True for r in rows)
    assert any(r["speed_kmh"] >= 3 for r in rows)
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_geofence_exit_of_an_armed_vehicle_carried_away_raises_the_fence_alarm(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("geofence", mosquitto, influxdb, alertmanager, tmp_path, ("geofence_exit", 2))
    raised = run.raised(SCRIPTED)
    assert ("geofence_exit", 2, None) in raised
    assert not [r for r in raised if r[0] == "wheel_motion_armed"]  # carried on a van: its wheels do not turn
    transition = next(t for t in run.engine.seen if t.rule == "geofence_exit")
    assert transition.value is not None and transition.value > 1.2  # beyond R x 1.2 (V-5.2's test)
    assert "越界报警" in run.am_alerts[0]["annotations"]["summary"]
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_low_soc_reminds_the_user_at_level_1(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("low_soc", mosquitto, influxdb, alertmanager, tmp_path, ("vehicle_low_soc", 1))
    assert run.am_alerts[0]["labels"]["severity"] == "notice"
    assert "低电量提醒" in run.am_alerts[0]["annotations"]["summary"]
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_a_pack_declaring_the_wrong_chemistry_is_flagged(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("wrong_chemistry", mosquitto, influxdb, alertmanager, tmp_path, ("chemistry_mismatch", 2))
    await _until(lambda: bool(_stored_alert(run, "chemistry_mismatch")), 15, "the alert point in InfluxDB")
    assert _stored_alert(run, "chemistry_mismatch")[0]["category"] == "storage_mismatch"
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_discharge_below_the_protection_voltage_asks_to_power_the_vehicle_off(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("deep_discharge", mosquitto, influxdb, alertmanager, tmp_path, ("discharge_protection", 2))
    assert ("discharge_protection", 2, "power_off") in run.raised(SCRIPTED)
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_a_clock_that_ignores_calibration_is_an_alert_and_a_clock_that_takes_it_is_corrected(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    # The rider's clock starts 90 s fast too, but it calibrates from the ingest worker's reply.
    run = await _scenario("clock_skew", mosquitto, influxdb, alertmanager, tmp_path, ("clock_skew", 1),
                          rider_clock_offset_ms=90_000)
    assert run.stats.calibrations >= 2  # both vehicles were told the platform's time (V-4.6)
    rider = next(v for v in run.sim.vehicles if v.id == RIDER)
    assert abs(rider.clock_offset_ms) < 5_000
    assert next(v for v in run.sim.vehicles if v.id == SCRIPTED).clock_offset_ms == 120_000  # ignored it
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_a_silent_device_is_reported_overdue_and_escalates(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("silent", mosquitto, influxdb, alertmanager, tmp_path, ("report_overdue", 2))
    levels = [lv for rule, lv, _ in run.raised(SCRIPTED) if rule == "report_overdue"]
    assert levels == [1, 2]  # a notice after three missed intervals, a warning after fifteen
    _rider_quiet(run)


@pytest.mark.timeout(240)
async def test_a_battery_overheating_in_a_moving_vehicle_climbs_to_level_3_with_no_cut_off(
        mosquitto: Mosquitto, influxdb: InfluxDB, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    run = await _scenario("overheat", mosquitto, influxdb, alertmanager, tmp_path, ("over_temperature", 3))
    raised = run.raised(SCRIPTED)
    first = [r for r, _lv, _ in raised]
    assert first.index("temperature_rise_rate") < first.index("over_temperature")  # the rise warns first
    hot = next(t for t in run.engine.seen if t.rule == "over_temperature" and t.to_level == 3)
    assert hot.protective_action is None and hot.vehicle_command is None and hot.target.slot == 1
    assert "骑手" in hot.annotations["action"]
    assert run.am_alerts[0]["labels"]["severity"] == "critical"
    _rider_quiet(run)
