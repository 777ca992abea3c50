"""Alert service against real servers: Alertmanager (shipped routing), InfluxDB, the pymodbus simulator.

Readings are fed to the service's reading hook directly where the test is about the fan-out
(the engine runs on a stepped clock, so ``for: 20s`` costs nothing), and come from real polls of
the simulator where a cabinet must be commanded.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from alerting import cli as alerts_cli
from alerting.actions import ActionPolicy, ActionRunner, Command, ForbiddenCommand, check_command
from alerting.api import add_routes
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.service import ACTION_FAILED, AlertService
from alerting.state import AlertKey, AlertStore
from cascade.app import alert_service_for, alerting_settings
from cascade.config import AppConfig, ConfigError
from cascade.pipeline import Pipeline
from collectors.modbus.profile import find_profile
from collectors.modbus.settings import CabinetConfig
from core.model import CabinetReading, SlotReading
from exporters.influx.sink import InfluxConfig
from notifier import render_alertmanager_config
from simulators.fleet import build_fleet
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port
from tests.fixtures.prom import SHIPPED_ALERTMANAGER_CONFIG

pytestmark = pytest.mark.timeout(120)

SITE, CAB, SLOT = "site-01", "C0001", 3
KEY = f"over_temperature@{SITE}/{CAB}/{SLOT}"


def make_config(tmp_path: Path, cabinets: list[CabinetConfig], influx_url: str | None = None) -> AppConfig:
    profile = find_profile("reference-cabinet")
    influx = None if influx_url is None else InfluxConfig(url=influx_url, database="cascade",
                                                          spool_dir=str(tmp_path / "spool"), flush_interval_s=0.2)
    return AppConfig(source=str(tmp_path / "test.yaml"), cabinets=cabinets, profiles={"reference-cabinet": profile},
                     influxdb=influx, metrics_port=0, status_interval_s=0)


def reading(temperature_c: float, cabinet: str = CAB) -> CabinetReading:
    return CabinetReading(cabinet_id=cabinet, site=SITE, model="reference-cabinet", timestamp_ns=time.time_ns(),
                          slots=[SlotReading(slot=SLOT, temperature_c=temperature_c, battery_id="NM48-TEST0001")])


async def feed(service: AlertService, clock: ManualClock, temperature_c: float, seconds: float = 25,
               cabinet: str = CAB) -> list:
    """Hold a temperature for ``seconds`` of engine time (two readings, so ``for`` is met)."""
    before = len(service.store.history())
    await service.handle_reading(reading(temperature_c, cabinet))
    clock.now += seconds
    await service.handle_reading(reading(temperature_c, cabinet))
    return service.store.history()[before:]


async def eventually(check, timeout_s: float = 15.0, interval_s: float = 0.1):
    """Retry ``check`` (sync or async) until it returns a truthy value; bounded in time."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")


def am_alerts(am, **labels: str) -> list[dict]:
    """Alerts Alertmanager holds (inhibited and silenced included) whose labels include ``labels``."""
    return [a for a in am.alerts() if all(a["labels"].get(k) == v for k, v in labels.items())]


def shipped_alertmanager(factory, receiver_url: str):
    return factory(render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), receiver_url))


@pytest.fixture
def engine_clock() -> ManualClock:
    return ManualClock(time.time())


def make_engine(clock: ManualClock, tmp_path: Path, rules=("over_temperature",)) -> Engine:
    return Engine(load_rules().only(list(rules)), clock=clock, state=AlertStore(tmp_path / "alerts.json"),
                  audit_path=tmp_path / "audit.jsonl")


async def test_an_acknowledged_alert_stops_paging_until_it_changes_level(tmp_path, alertmanager_factory, engine_clock):
    """Acknowledging stops the repeat calls: Alertmanager holds the alert silenced (it still shows, as
    acknowledged). A change of level pages again, and a clear ends the silence, so a later raise of
    the same alert is a new page."""
    from tests.fixtures.prom import _http_json

    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    pipeline = Pipeline(make_config(tmp_path, []))
    engine = make_engine(engine_clock, tmp_path)
    service = alert_service_for(pipeline, engine, alertmanager_url=am.url, resend_interval_s=30,
                                policy=ActionPolicy(perform=frozenset()), ack_silence_delay_s=0)

    def state(level: str) -> str | None:
        found = am_alerts(am, alertname="over_temperature", level=level)
        return found[0]["status"]["state"] if found else None

    def live_silences() -> list[dict]:
        return [x for x in _http_json("GET", f"{am.url}/api/v2/silences") if x["status"]["state"] == "active"]

    async with service:
        await feed(service, engine_clock, 75.0)  # level 3: the phone rings every 5 minutes until...
        assert await eventually(lambda: state("3") == "active")
        key = f"over_temperature@{SITE}/{CAB}/{SLOT}"
        service.acknowledge(key, "noc-li", "on my way")
        assert await eventually(lambda: state("3") == "suppressed")  # ...someone acknowledges: silence
        [silence] = live_silences()
        assert silence["createdBy"].startswith("noc-li") and "on my way" in silence["comment"]
        assert {m["name"]: m["value"] for m in silence["matchers"]}["level"] == "3"
        assert service.store.get(key).ack.who == "noc-li"

        await feed(service, engine_clock, 60.0)  # de-escalates to level 2: a new label set, pages again
        assert await eventually(lambda: state("2") == "active")
        assert await eventually(lambda: not live_silences())  # the level-3 acknowledgement is over

        service.acknowledge(key, "noc-li", "still on it")
        assert await eventually(lambda: state("2") == "suppressed")
        await feed(service, engine_clock, 30.0, seconds=5)  # clears
        assert await eventually(lambda: not live_silences()), "a clear ends the silence"


async def test_transitions_reach_alertmanager_raise_escalate_clear(tmp_path, alertmanager_factory, engine_clock):
    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    pipeline = Pipeline(make_config(tmp_path, []))
    engine = make_engine(engine_clock, tmp_path)
    service = alert_service_for(pipeline, engine, alertmanager_url=am.url, resend_interval_s=30,
                           policy=ActionPolicy(perform=frozenset()))
    async with service:
        assert service.handle_reading in pipeline.hooks
        kinds = [h["kind"] for h in await feed(service, engine_clock, 50, seconds=300)]
        assert kinds == ["raise"]
        firing = await eventually(lambda: am_alerts(am, alertname="over_temperature"))
        labels = firing[0]["labels"]
        assert labels == {"alertname": "over_temperature", "rule": "over_temperature", "level": "1",
                          "severity": "notice", "site": SITE, "cabinet": CAB, "slot": str(SLOT),
                          "battery": "NM48-TEST0001"}
        assert firing[0]["annotations"]["summary"].startswith("L1 ")
        assert set(firing[0]["annotations"]) == {"summary", "diagnosis", "action"}

        # Escalation: the level-1 alert is resolved, the level-2 one fires.
        assert [h["kind"] for h in await feed(service, engine_clock, 60)] == ["escalate"]
        await eventually(lambda: [a["labels"]["level"] for a in am_alerts(am, alertname="over_temperature")] == ["2"])
        assert not service.pusher.is_firing(labels)

        # Clear: nothing left firing for the rule.
        assert [h["kind"] for h in await feed(service, engine_clock, 30, seconds=5)] == ["clear"]
        await eventually(lambda: am_alerts(am, alertname="over_temperature") == [])
        assert service.pusher.active == {}
    reg = pipeline.registry
    assert reg.get_sample_value("cascade_alert_transitions_total", {"kind": "raise", "level": "1"}) == 1
    assert reg.get_sample_value("cascade_alert_transitions_total", {"kind": "escalate", "level": "2"}) == 1
    assert reg.get_sample_value("cascade_alert_transitions_total", {"kind": "clear", "level": "2"}) == 1
    assert [reg.get_sample_value("cascade_alerts_active", {"level": n}) for n in "123"] == [0, 0, 0]
    assert reg.get_sample_value("cascade_alert_push_failures_total") == 0


async def test_push_failures_are_counted_and_recovered_when_alertmanager_returns(
        tmp_path, alertmanager_factory, engine_clock):
    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    am.process.stop()
    pipeline = Pipeline(make_config(tmp_path, []))
    service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=am.url,
                           resend_interval_s=30, policy=ActionPolicy(perform=frozenset()))
    failures = lambda: pipeline.registry.get_sample_value("cascade_alert_push_failures_total")  # noqa: E731
    async with service:
        started = time.monotonic()
        await feed(service, engine_clock, 50, seconds=300)  # level 1 holds 5 minutes
        assert time.monotonic() - started < 0.5, "the hook must not wait for Alertmanager"
        await eventually(lambda: failures() >= 2)
        assert service.pusher.pending and not service.pusher.up
        assert pipeline.registry.get_sample_value("cascade_alerts_active", {"level": "1"}) == 1
        assert pipeline.registry.get_sample_value("cascade_cabinet_alert_level", {"site": SITE, "cabinet": CAB}) == 1
        am.process.start()
        held = await eventually(lambda: am_alerts(am, alertname="over_temperature"), timeout_s=40)
        assert held[0]["labels"]["level"] == "1"
        await eventually(lambda: not service.pusher.pending and service.pusher.up)


async def test_ack_and_thresholds_over_http_and_cli(tmp_path, engine_clock):
    pipeline = Pipeline(make_config(tmp_path, []))
    engine = make_engine(engine_clock, tmp_path, rules=("over_temperature", "h2_gas"))
    service = alert_service_for(pipeline, engine, alertmanager_url=None, policy=ActionPolicy(perform=frozenset()))
    add_routes(pipeline.app, service)
    async with service, pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await feed(service, engine_clock, 50, seconds=300)  # level 1 holds 5 minutes

        async with http.get(f"{base}/api/alerts") as resp:
            alerts = (await resp.json())["alerts"]
        assert [(a["key"], a["level"], a["acknowledged"]) for a in alerts] == [(KEY, 1, False)]
        async with http.get(f"{base}/api/alerts/rollup") as resp:
            assert await resp.json() == {SITE: {"level": 1, "cabinets": {CAB: {"level": 1, "slots": {"3": 1}}}}}

        async with http.post(f"{base}/api/alerts/{KEY}/ack", json={"who": "noc-alice", "comment": "on my way"}) as r:
            assert r.status == 200
            body = await r.json()
        assert body["ack"]["who"] == "noc-alice" and body["ack"]["comment"] == "on my way" and body["ack"]["level"] == 1
        assert engine.state.get(KEY).ack.who == "noc-alice"
        # The on-call view: one level-1 alert acknowledged, about 300 s after it was raised.
        assert pipeline.registry.get_sample_value("cascade_alerts_acknowledged", {"level": "1"}) == 1
        assert pipeline.registry.get_sample_value("cascade_alert_ack_seconds_count", {"level": "1"}) == 1
        async with http.post(f"{base}/api/alerts/h2_gas@{SITE}/{CAB}/1/ack", json={"who": "bob"}) as r:
            assert r.status == 404
            assert "GET /api/alerts" in (await r.json())["error"]
        # Refusals are Simplified Chinese by default (tests/test_alerts_cli_language.py); English on request.
        as_json = {"Content-Type": "application/json", "Accept-Language": "en"}
        for bad, expected in (("not json", "not JSON"), ("[1]", "JSON object"), ('{"comment": "x"}', "missing 'who'"),
                              ('{"who": 5}', "'who' must be a string"), ('{"who": " "}', "'who' is empty"),
                              (json.dumps({"who": "x" * 65}), "at most 64"),
                              (json.dumps({"who": "a", "comment": "c" * 501}), "at most 500")):
            async with http.post(f"{base}/api/alerts/{KEY}/ack", data=bad, headers=as_json) as r:
                assert r.status == 400, bad
                assert expected in (await r.json())["error"], bad
        # What a web page on another site could make a browser send is refused, token or not: a "simple"
        # cross-site request (text/plain or a form), or any request naming a foreign Origin.
        forged = json.dumps({"who": "evil", "comment": "acked by a web page"})
        async with http.post(f"{base}/api/alerts/{KEY}/ack", data=forged,
                             headers={"Content-Type": "text/plain", "Origin": "http://evil.example"}) as r:
            assert r.status == 415
        async with http.post(f"{base}/api/alerts/{KEY}/ack", data=forged,
                             headers={**as_json, "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with http.put(f"{base}/api/thresholds/over_temperature/1", data=forged,
                            headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 415
        assert engine.state.get(KEY).ack.who == "noc-alice"  # none of them acknowledged anything
        async with http.post(f"{base}/api/alerts/{KEY}/ack", json={"who": "noc-alice", "comment": "same origin"},
                             headers={"Origin": base}) as r:
            assert r.status == 200  # a page served by the collector itself may

        url = f"{base}/api/thresholds/over_temperature/1"
        async with http.put(url, json={"value": 52, "who": "noc-alice", "reason": "summer"}) as r:
            assert r.status == 200
            entry = await r.json()
        assert (entry["old"], entry["new"], entry["who"], entry["reason"]) == (50.0, 52.0, "noc-alice", "summer")
        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert audit == [entry]
        async with http.put(url, json={"value": 60, "who": "x", "reason": "y"}) as r:
            assert r.status == 400
            assert "below" in (await r.json())["error"] or "above" in (await r.json())["error"]
        async with http.put(f"{base}/api/thresholds/no_such_rule/1", json={"value": 1, "who": "x", "reason": "y"}) as r:
            assert r.status == 404
        async with http.put(url, json={"value": "hot", "who": "x", "reason": "y"}, headers={"Accept-Language": "en"}) as r:
            assert r.status == 400 and "'value' must be a number" in (await r.json())["error"]
        async with http.get(f"{base}/api/thresholds") as r:
            doc = await r.json()
        rule = next(r for r in doc["rules"] if r["id"] == "over_temperature")
        assert rule["levels"]["1"]["threshold"] == 52 and doc["audit"] == [entry]

        # The CLI talks to the same API (run in a thread: it is blocking and this loop serves it).
        async def cli(*argv: str) -> int:
            return await asyncio.to_thread(alerts_cli.run, ["--url", base, *argv])
        assert await cli("list") == 0
        assert await cli("rollup") == 0
        assert await cli("ack", KEY, "--who", "noc-bob", "--comment", "taking over") == 0
        assert engine.state.get(KEY).ack.who == "noc-bob"
        assert await cli("ack", "nope@x/y", "--who", "noc-bob") == 1
        assert await cli("set-threshold", "over_temperature", "2", "57", "--who", "noc-bob", "--reason", "hot week") == 0
        assert engine.rules["over_temperature"].levels[1].threshold == 57
        assert await cli("set-threshold", "over_temperature", "2", "40", "--who", "noc-bob", "--reason", "x") == 1
        assert await cli("actions") == 0
    assert await asyncio.to_thread(alerts_cli.run, ["--url", f"http://127.0.0.1:{free_port()}", "list"]) == 2


def test_allow_list_refuses_every_command_but_slot_output(tmp_path):
    check_command("slot_output")
    for name in ("fire_suppression", "suppression_reset", "emergency_state", "SLOT_OUTPUT", ""):
        with pytest.raises(ForbiddenCommand, match="P-3.3"):
            check_command(name)
    config = make_config(tmp_path, [CabinetConfig(id=CAB, host="127.0.0.1", port=free_port(), site=SITE)])
    runner = ActionRunner(Pipeline(config).commander)
    command = Command(SITE, CAB, 1, "fire_suppression", 1, "slot_cutoff", "thermal_runaway", 3, "x")
    with pytest.raises(ForbiddenCommand):
        asyncio.run(runner.execute(command))
    assert not runner.recent, "a refused command is not even attempted"
    with pytest.raises(ValueError, match="unknown protective action"):
        ActionPolicy(perform=frozenset({"start_suppression"}))


def test_alerting_config_errors_name_key_and_fix(tmp_path):
    def settings(doc):
        return alerting_settings(AppConfig(source="cfg.yaml", cabinets=[], profiles={}, influxdb=None, alerting=doc))

    assert settings({})["alertmanager_url"] == "http://127.0.0.1:9093"
    assert settings({"alertmanager_url": None})["alertmanager_url"] is None
    cases = [
        ({"alertmanager": "x"}, "alerting.alertmanager: unknown key"),
        ({"alertmanager_url": "localhost:9093"}, "alerting.alertmanager_url"),
        ({"resend_interval_s": 0}, "alerting.resend_interval_s"),
        ({"actions": {"perform": ["fire_suppression"]}}, "alerting.actions.perform"),
        ({"actions": {"rules": {"thermal_runaway": {2: "sprinkler"}}}}, "alerting.actions.rules.thermal_runaway.2"),
        ({"actions": {"rules": {"thermal_runaway": {4: None}}}}, "level 4"),
        ({"enabled": "yes"}, "alerting.enabled"),
    ]
    for doc, expected in cases:
        with pytest.raises(ConfigError, match="Fix:") as err:
            settings(doc)
        assert expected in str(err.value) and str(err.value).startswith("cfg.yaml: ")


@pytest.fixture
async def simulator():
    """One reference cabinet on a real pymodbus server (wall clock); yields (fleet, server)."""
    port = free_port()
    fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=1, base_port=port,
                        seed=11)
    server = SimulatorServer(fleet, control_port=0, timer_s=0.05)
    await server.start()
    yield fleet, server
    await server.stop()


async def test_protective_action_cuts_slot_off_and_is_audited(tmp_path, simulator, influxdb, alertmanager_factory,
                                                              engine_clock):
    fleet, server = simulator
    cab = fleet.cabinets[0]
    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    # Polled once at start only: the readings that matter are fed in below on the engine's clock.
    config = make_config(tmp_path, [CabinetConfig(id=CAB, host="127.0.0.1", port=cab.port, site=SITE,
                                                  interval_s=3600, timeout_s=1, fast_interval_s=None)],
                         influx_url=influxdb.url)
    pipeline = Pipeline(config)
    service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=am.url,
                           resend_interval_s=30, policy=ActionPolicy(retry_s=0.3))
    add_routes(pipeline.app, service)
    async with service, pipeline:
        await feed(service, engine_clock, 60)  # straight to level 2: stop_charging
        await eventually(lambda: service.actions.recent)
        record = service.actions.recent[-1]
        assert (record.result, record.readback, record.slot, record.command, record.actor) == \
            ("ok", 0, SLOT, "slot_output", "rule:over_temperature@level2")
        assert cab.state.slots[SLOT - 1].output_enabled is False

        # Escalation acts again (level 3: slot_cutoff); going down and back up to a level already
        # acted on does not repeat the write.
        assert [h["kind"] for h in await feed(service, engine_clock, 75)] == ["escalate"]
        await eventually(lambda: len(service.actions.recent) == 2)
        assert service.actions.recent[-1].actor == "rule:over_temperature@level3"
        assert [h["kind"] for h in await feed(service, engine_clock, 60)] == ["deescalate"]
        assert [h["kind"] for h in await feed(service, engine_clock, 75)] == ["escalate"]
        await asyncio.sleep(0.3)
        assert len(service.actions.recent) == 2

        # A failed write is a level-3 alert until a later write succeeds.
        await server.stop()
        await feed(service, engine_clock, 30, seconds=5)  # clear: the next raise is a new alert
        await feed(service, engine_clock, 60)
        failed_key = f"{ACTION_FAILED}@{SITE}/{CAB}/{SLOT}"
        await eventually(lambda: failed_key in {a["key"] for a in service.active_alerts()})
        held = await eventually(lambda: am_alerts(am, alertname=ACTION_FAILED))
        assert held[0]["labels"] | {} == {"alertname": ACTION_FAILED, "rule": ACTION_FAILED, "level": "3",
                                          "severity": "critical", "site": SITE, "cabinet": CAB, "slot": str(SLOT),
                                          "battery": "NM48-TEST0001", "protective_action": "stop_charging"}
        assert "手动切断" in held[0]["annotations"]["action"]  # by hand, in the operators' language
        assert pipeline.registry.get_sample_value("cascade_alerts_active", {"level": "3"}) == 1
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}/api/actions") as resp:
                actions = (await resp.json())["actions"]
        assert [a["result"] for a in actions][:2] == ["ok", "ok"] and actions[-1]["result"] == "failed"
        await server.start()
        await eventually(lambda: failed_key not in {a["key"] for a in service.active_alerts()}, timeout_s=20)
        await eventually(lambda: am_alerts(am, alertname=ACTION_FAILED) == [])
        assert service.actions.recent[-1].result == "ok"

    # Everything is in InfluxDB: alert points (Grafana annotations) and command points with read-back.
    alerts = influxdb.query('SELECT * FROM "alert" WHERE "rule" = \'over_temperature\'')
    assert [(a["kind"], a["from_level"], a["level"]) for a in alerts][:4] == [
        ("raise", 0, 2), ("escalate", 2, 3), ("deescalate", 3, 2), ("escalate", 2, 3)]
    assert alerts[0]["severity"] == "warning" and alerts[0]["slot"] == str(SLOT) and alerts[0]["cabinet"] == CAB
    assert alerts[0]["battery"] == "NM48-TEST0001" and alerts[0]["value"] == 60 and alerts[0]["summary"]
    failed = influxdb.query(f'SELECT * FROM "alert" WHERE "rule" = \'{ACTION_FAILED}\'')
    assert [f["kind"] for f in failed] == ["raise", "clear"]
    commands = influxdb.query('SELECT * FROM "command"')
    assert {(c["actor"], c["ok"], c["readback"]) for c in commands} >= {
        ("rule:over_temperature@level2", True, 0), ("rule:over_temperature@level3", True, 0)}


async def test_start_app_wires_engine_service_and_routes(tmp_path):
    config = make_config(tmp_path, [CabinetConfig(id=CAB, host="127.0.0.1", port=free_port(), site=SITE,
                                                  interval_s=3600, timeout_s=0.5, fast_interval_s=None)])
    config.alerting = {"state_file": str(tmp_path / "alerts.json"), "audit_file": str(tmp_path / "audit.jsonl"),
                       "alertmanager_url": None, "actions": {"perform": [], "retry_s": 5}, "api_token": "s3cret"}
    from cascade.app import start_app

    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        service = pipeline.alerts
        assert service.handle_reading in pipeline.hooks and service.pusher is None
        assert service.actions.policy.perform == frozenset() and service.actions.policy.retry_s == 5
        # The engine's rule-error counter is on the collector's /metrics (one series per rule, from 0).
        async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}/metrics") as resp:
            assert 'cascade_rule_errors_total{rule="pack_overvoltage"} 0.0' in await resp.text()
        over_voltage = CabinetReading(cabinet_id=CAB, site=SITE, model="reference-cabinet",
                                      timestamp_ns=time.time_ns(), slots=[SlotReading(slot=SLOT, voltage_v=59.5, nominal_voltage_v=48.0)])
        await service.handle_reading(over_voltage)  # pack_overvoltage level 2 has no `for`: at once
        async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}/api/alerts") as resp:
            assert resp.status == 200
            alerts = (await resp.json())["alerts"]
        assert [(a["key"], a["level"]) for a in alerts] == [(f"pack_overvoltage@{SITE}/{CAB}/{SLOT}", 2)]
        assert service.actions.recent[-1].result == "skipped"  # perform: [] = observe only
        # P-5.1.2.7: acting needs the API token; reading does not.
        ack_url = f"http://127.0.0.1:{pipeline.metrics_port}/api/alerts/{alerts[0]['key']}/ack"
        async with http.post(ack_url, json={"who": "mallory"}) as resp:
            assert resp.status == 401 and "Bearer" in (await resp.json())["error"]
        async with http.post(ack_url, json={"who": "mallory"}, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.put(f"http://127.0.0.1:{pipeline.metrics_port}/api/thresholds/over_temperature/1",
                            json={"value": 50, "who": "mallory", "reason": "x"}) as resp:
            assert resp.status == 401
        async with http.post(ack_url, json={"who": "noc-alice"}, headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200 and (await resp.json())["ack"]["who"] == "noc-alice"
    assert not pipeline.hooks, "the hook is removed on exit"
    assert json.loads((tmp_path / "alerts.json").read_text())["alerts"], "alert state persisted"

    config.alerting = {"enabled": False}
    async with start_app(config) as pipeline:
        assert not pipeline.hooks


async def test_failed_protective_action_survives_a_restart(tmp_path, engine_clock, alertmanager_factory):
    """A cut-off that could not be written is safety state: after a restart the level-3 alert is
    paged again and the write retried, until it reads back."""
    am = alertmanager_factory("route: {receiver: none}\nreceivers: [{name: none}]\n")
    dead = CabinetConfig(id=CAB, host="127.0.0.1", port=free_port(), site=SITE, interval_s=3600, timeout_s=0.3,
                         fast_interval_s=None)
    path = tmp_path / "alerts-failed-actions.json"
    policy = ActionPolicy(perform=frozenset({"stop_charging", "slot_cutoff"}), retry_s=3600)
    pipeline = Pipeline(make_config(tmp_path, [dead]))
    service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=None, policy=policy,
                           failed_actions_path=path)
    async with service:
        await feed(service, engine_clock, 75.0)  # over_temperature level 3 -> slot cut-off, cabinet is down
        await eventually(lambda: service.failed)
    saved = json.loads(path.read_text())
    assert [item["command"]["name"] for item in saved] == ["slot_output"] and saved[0]["attempts"] >= 1

    pipeline = Pipeline(make_config(tmp_path, [dead]))
    restarted = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=am.url,
                             policy=policy, failed_actions_path=path)
    assert [str(k) for k in restarted.failed] == [f"protective_action_failed@{SITE}/{CAB}/{SLOT}"]
    async with restarted:
        held = await eventually(lambda: am_alerts(am, alertname="protective_action_failed"))
        assert held[0]["labels"]["level"] == "3" and held[0]["labels"]["slot"] == str(SLOT)


async def test_an_empty_read_back_is_a_failed_action_and_retries_go_on(tmp_path, engine_clock):
    """A cabinet that accepts the write but reads back nothing: the cut-off is a failed action
    (alerted, retried), never an exception that ends the action or the retry loop."""
    from tests.fixtures.bad_modbus import empty_read_server

    async with empty_read_server() as port:
        cabinet = CabinetConfig(id=CAB, host="127.0.0.1", port=port, site=SITE, interval_s=3600, timeout_s=0.5,
                                fast_interval_s=None)
        pipeline = Pipeline(make_config(tmp_path, [cabinet]))
        policy = ActionPolicy(perform=frozenset({"stop_charging", "slot_cutoff"}), retry_s=0.2)
        service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=None, policy=policy)
        async with service:
            await feed(service, engine_clock, 75.0)
            failed = await eventually(lambda: service.failed)
            key = next(iter(failed))
            await eventually(lambda: service.failed[key].attempts >= 3)  # the retry loop is alive
            assert "returned no value" in service.failed[key].last_error
            assert service._retry_task is not None and not service._retry_task.done()


async def test_a_relay_that_stays_closed_after_a_cut_off_is_a_failed_action(tmp_path, engine_clock):
    """A welded or stuck relay: the cabinet acknowledges the write, but the read-back still says
    closed. The cut-off did not happen: the action is failed, audited as failed, alerted at level 3
    and retried; never recorded as "ok"."""
    from tests.fixtures.bad_modbus import stuck_relay_server

    async with stuck_relay_server() as port:
        cabinet = CabinetConfig(id=CAB, host="127.0.0.1", port=port, site=SITE, interval_s=3600, timeout_s=0.5,
                                fast_interval_s=None)
        pipeline = Pipeline(make_config(tmp_path, [cabinet]))
        policy = ActionPolicy(perform=frozenset({"stop_charging", "slot_cutoff"}), retry_s=0.2)
        service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=None,
                                    policy=policy)
        async with service:
            await feed(service, engine_clock, 75.0)  # over_temperature level 3 -> slot_cutoff
            failed = await eventually(lambda: service.failed)
            key = next(iter(failed))
            assert str(key) == f"protective_action_failed@{SITE}/{CAB}/{SLOT}"
            await eventually(lambda: service.failed[key].attempts >= 2)  # retried, still failing
            assert "read back True, expected 0" in service.failed[key].last_error
            records = [r for r in service.actions.recent if r.command == "slot_output"]
            assert records and all(r.result == "failed" and r.readback == 1 for r in records)
            assert not [r for r in service.actions.recent if r.ok], "a cut-off that did not happen is never ok"
            assert service.store.worst_level() == 3


async def test_a_cut_off_cut_short_by_a_crash_is_reissued_at_start(tmp_path, engine_clock, simulator):
    """The engine stores the level-3 alert before its write runs; if the process dies in between,
    the next start repeats the cut-off instead of leaving the slot energised."""
    crashed = make_engine(engine_clock, tmp_path)
    crashed.evaluate(reading(75.0))
    engine_clock.now += 25
    assert any(t.protective_action == "slot_cutoff" for t in crashed.evaluate(reading(75.0)))
    # ... and the process dies here, before any write. Next start:
    fleet, _server = simulator
    cabinet = CabinetConfig(id=CAB, host="127.0.0.1", port=fleet.cabinets[0].port, site=SITE, interval_s=3600,
                            timeout_s=1, fast_interval_s=None)
    pipeline = Pipeline(make_config(tmp_path, [cabinet]))
    service = alert_service_for(pipeline, make_engine(engine_clock, tmp_path), alertmanager_url=None,
                           policy=ActionPolicy(perform=frozenset({"slot_cutoff"})))
    async with service:
        done = await eventually(lambda: [r for r in service.actions.recent if r.ok])
    assert (done[0].command, done[0].slot, done[0].readback) == ("slot_output", SLOT, 0)


async def test_alerts_of_a_rule_dropped_from_the_catalogue_are_cleared_through_the_outputs(tmp_path, engine_clock):
    before = make_engine(engine_clock, tmp_path)
    before.evaluate(reading(50.0))
    engine_clock.now += 300  # level 1 holds 5 minutes
    assert [t.to_level for t in before.evaluate(reading(50.0))] == [1]
    pipeline = Pipeline(make_config(tmp_path, []))
    after = make_engine(engine_clock, tmp_path, rules=("h2_gas",))  # over_temperature no longer exists
    service = alert_service_for(pipeline, after, alertmanager_url=None, policy=ActionPolicy(perform=frozenset()))
    async with service:
        assert service.active_alerts() == []
    assert pipeline.registry.get_sample_value("cascade_alert_transitions_total", {"kind": "clear", "level": "1"}) == 1


async def test_a_silent_cabinet_is_a_warning_within_its_limit_and_clears_when_it_reports(
        tmp_path, alertmanager_factory, engine_clock):
    """A cabinet that stops reporting leaves its safety rules blind: after offline_after_s it is a
    level-2 cabinet_offline alert in Alertmanager (no Prometheus involved), cleared by its next reading."""
    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    engine_clock.now = time.time() - 100  # the 75 s this test moves on stay in Alertmanager's past
    engine = make_engine(engine_clock, tmp_path)
    registry = CollectorRegistry()
    service = AlertService(engine, alertmanager_url=am.url, registry=registry, cabinets=[(SITE, CAB), (SITE, "C0002")],
                           policy=ActionPolicy(perform=frozenset()), clock=engine_clock, offline_after_s=60)
    async with service:
        await service.handle_reading(reading(25.0))  # C0001 reports; C0002 never does
        engine_clock.now += 45
        await service.handle_reading(reading(25.0))
        service.check_offline()
        assert not service.offline  # 45 s: within the limit
        engine_clock.now += 30  # C0002 silent 75 s since the watch started, C0001 30 s
        service.check_offline()
        assert [str(k) for k in service.offline] == [f"cabinet_offline@{SITE}/C0002"]
        firing = await eventually(lambda: am_alerts(am, alertname="cabinet_offline"))
        assert firing[0]["labels"]["level"] == "2" and firing[0]["labels"]["cabinet"] == "C0002"
        assert registry.get_sample_value("cascade_cabinet_alert_level", {"site": SITE, "cabinet": "C0002"}) == 2
        assert [a["key"] for a in service.active_alerts()] == [f"cabinet_offline@{SITE}/C0002"]
        assert "75 秒无数据" in service.active_alerts()[0]["annotations"]["summary"]  # silent for 75 s
        service.check_offline()
        assert len([k for k in service.offline]) == 1  # raised once, not again every check
        await service.handle_reading(reading(25.0, cabinet="C0002"))  # it reports again
        assert not service.offline
        assert await eventually(lambda: not [a for a in am_alerts(am, alertname="cabinet_offline")
                                             if a["status"]["state"] == "active"])
        # C0001's last reading charged nothing: when it goes silent, that is level 1 (nothing is charging
        # unwatched); C0002 was never seen: its state is unknown, so it was level 2 above.
        engine_clock.now += 61
        service.check_offline()
        assert service.active_alerts()[0]["level"] == 1
        assert registry.get_sample_value("cascade_cabinet_alert_level", {"site": SITE, "cabinet": CAB}) == 1


def test_offline_limits_default_to_two_poll_intervals_plus_the_timeout(tmp_path):
    from cascade.app import _offline_limits

    config = make_config(tmp_path, [CabinetConfig(id="A", host="h", site=SITE, interval_s=5, timeout_s=2),
                                    CabinetConfig(id="B", host="h", site=SITE, interval_s=1, timeout_s=1)])
    assert _offline_limits(config, None) == {(SITE, "A"): 12.0, (SITE, "B"): 10.0}  # at least 10 s
    assert _offline_limits(config, 45.0) == {(SITE, "A"): 45.0, (SITE, "B"): 45.0}


async def test_an_unacknowledged_level_3_alert_pages_the_next_on_call(tmp_path, alertmanager_factory, engine_clock):
    """Nobody acknowledges a level-3 alert within escalate_after_s: a copy with escalation="1" goes to
    the critical-escalation receiver (the next on-call); acknowledging silences both; a clear ends both."""
    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    engine_clock.now = time.time() - 1000  # the ten minutes this test moves on stay in Alertmanager's past
    engine = make_engine(engine_clock, tmp_path)
    service = AlertService(engine, alertmanager_url=am.url, registry=CollectorRegistry(), resend_interval_s=900,
                           policy=ActionPolicy(perform=frozenset()), clock=engine_clock, escalate_after_s=600)
    key = f"over_temperature@{SITE}/{CAB}/{SLOT}"

    def state(**labels: str) -> list[str]:
        return [a["status"]["state"] for a in am_alerts(am, alertname="over_temperature", **labels)]

    async with service:
        await feed(service, engine_clock, 75.0)
        assert await eventually(lambda: state(level="3") == ["active"])
        engine_clock.now += 300
        service.check_escalation()
        assert not service.escalated  # 5 minutes: the first on-call still has time
        engine_clock.now += 301
        service.check_escalation()
        assert list(service.escalated) == [AlertKey.parse(key)]
        assert await eventually(lambda: state(escalation="1") == ["active"])
        escalated = am_alerts(am, alertname="over_temperature", escalation="1")[0]
        assert escalated["receivers"][0]["name"] == "critical-escalation"
        assert escalated["annotations"]["summary"].startswith("已升级（10 分钟无人确认）")  # escalated after 10 min
        service.check_escalation()
        assert len(am_alerts(am, alertname="over_temperature")) == 2  # escalated once, not again

        service.acknowledge(key, "noc-wang", "on my way")  # both stop ringing
        assert await eventually(lambda: sorted(state()) == ["suppressed", "suppressed"])
        await feed(service, engine_clock, 30.0, seconds=5)  # clears: the copy ends with it
        assert not service.escalated


async def test_a_restart_re_pushes_an_escalated_alert_with_the_start_alertmanager_holds(
        tmp_path, alertmanager_factory, engine_clock):
    """After a restart the active alerts are pushed again; an alert that changed level must keep the
    startsAt of its current level (what Alertmanager holds), not the first raise."""
    from datetime import datetime

    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    engine_clock.now = time.time() - 300
    engine = make_engine(engine_clock, tmp_path)
    service = AlertService(engine, alertmanager_url=am.url, registry=CollectorRegistry(), resend_interval_s=600,
                           policy=ActionPolicy(perform=frozenset()), clock=engine_clock)

    def starts(level: str) -> float | None:
        found = am_alerts(am, alertname="over_temperature", level=level)
        return datetime.fromisoformat(found[0]["startsAt"].replace("Z", "+00:00")).timestamp() if found else None

    async with service:
        await feed(service, engine_clock, 60.0)  # level 2
        engine_clock.now += 60
        await feed(service, engine_clock, 75.0)  # level 3 at this time
        level3_at = engine.state.get(f"over_temperature@{SITE}/{CAB}/{SLOT}").updated_at
        assert await eventually(lambda: starts("3") is not None)
        held = starts("3")
    assert held == pytest.approx(level3_at, abs=0.01)
    restarted = AlertService(make_engine(engine_clock, tmp_path), alertmanager_url=am.url, resend_interval_s=600,
                             registry=CollectorRegistry(), policy=ActionPolicy(perform=frozenset()), clock=engine_clock)
    async with restarted:
        await asyncio.sleep(0.5)
        assert starts("3") == pytest.approx(level3_at, abs=0.01)
        assert len(am_alerts(am, alertname="over_temperature", level="3")) == 1


async def test_an_acknowledgement_lets_the_regulator_feed_catch_up_before_silencing(
        tmp_path, alertmanager_factory, engine_clock):
    """The silence of an acknowledgement starts 15 s later: a level change already batched for the
    regulator's feed (its route sends every 10 s) still goes out; on-call's repeats stop after that."""
    from tests.fixtures.prom import _http_json

    am = shipped_alertmanager(alertmanager_factory, f"http://127.0.0.1:{free_port()}")
    pipeline = Pipeline(make_config(tmp_path, []))
    engine = make_engine(engine_clock, tmp_path)
    service = alert_service_for(pipeline, engine, alertmanager_url=am.url, resend_interval_s=30,
                                policy=ActionPolicy(perform=frozenset()))
    async with service:
        await feed(service, engine_clock, 75.0)
        assert await eventually(lambda: bool(am_alerts(am, alertname="over_temperature", level="3")))
        service.acknowledge(f"over_temperature@{SITE}/{CAB}/{SLOT}", "noc-li", "on my way")
        assert await eventually(lambda: bool(_http_json("GET", f"{am.url}/api/v2/silences")))
        [silence] = _http_json("GET", f"{am.url}/api/v2/silences")
        assert silence["status"]["state"] == "pending"  # starts in 15 s, not now
        assert am_alerts(am, alertname="over_temperature", level="3")[0]["status"]["state"] == "active"
