"""End to end: a simulated thermal runaway, from Modbus registers to a level-3 page and a cut-off slot.

Real processes throughout: the pymodbus simulator playing ``thermal_runaway`` on C0003 slot 5,
the collector pipeline polling it, the warning engine (full catalogue) in the alert service,
InfluxDB, Alertmanager with the shipped routing pointed at a local webhook receiver.

Time: the scenario runs ``SPEED`` times faster than real time, and the engine's clock runs at
the same speed (as trace replay does), so the catalogue's ``for: 20s`` and rate windows mean
scenario seconds, and a poll every ``POLL_S`` is a poll every ``POLL_S × SPEED`` scenario seconds.

Policy: only ``thermal_runaway``'s level-3 ``slot_cutoff`` acts here. With the shipped default
its level-2 stop-charging write (or ``h2_gas`` level 3, which races it) de-energises the pack and
the runaway reverses before the fusion rule reaches level 3 — the point of early warning — but
this test wants to watch all three levels and the level-3 cut-off. Other slots of the cabinet
trip rules of their own (60 V packs against 48 V-class voltage thresholds, empty slots reading
zeros); their actions are observed only, so they do not disturb the slot under test.
"""

from __future__ import annotations

import time

import pytest

from alerting.actions import ActionPolicy
from alerting.api import add_routes
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.state import AlertStore
from bench.latency import WebhookReceiver
from cascade.app import alert_service_for
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from collectors.modbus.profile import find_profile
from collectors.modbus.settings import CabinetConfig
from exporters.influx.sink import InfluxConfig
from notifier import render_alertmanager_config
from simulators.fleet import build_fleet
from simulators.scenarios import load_scenario
from simulators.server import SimulatorServer
from tests.fixtures.clock import FastClock
from tests.fixtures.ports import free_port
from tests.fixtures.prom import SHIPPED_ALERTMANAGER_CONFIG
from tests.test_alert_service import am_alerts, eventually

pytestmark = pytest.mark.timeout(120)

SPEED = 60.0  # 30-minute runaway in 30 s
POLL_S = 0.25  # = 15 s of scenario time
CAB, SLOT = "C0003", 5


async def test_thermal_runaway_levels_cutoff_and_page(tmp_path, influxdb, alertmanager_factory):
    profile = find_profile("reference-cabinet")
    fleet = build_fleet([("reference-cabinet", profile)], cabinets=3, per_port=3, base_port=free_port(), seed=5)
    sim = SimulatorServer(fleet, control_port=0, timer_s=0.05)
    cab = fleet.by_id[CAB]
    config = AppConfig(
        source="e2e", profiles={"reference-cabinet": profile}, metrics_port=0, status_interval_s=0,
        cabinets=[CabinetConfig(id=CAB, host="127.0.0.1", port=cab.port, device_id=cab.device_id,
                                site=cab.state.site, interval_s=POLL_S, timeout_s=1.0)],
        influxdb=InfluxConfig(url=influxdb.url, database="cascade", spool_dir=str(tmp_path / "spool"),
                              flush_interval_s=0.2))
    site = cab.state.site
    readings = []
    async with WebhookReceiver() as rx:
        am = alertmanager_factory(render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), rx.url))
        await sim.start()
        try:
            pipeline = Pipeline(config)
            pipeline.hooks.append(readings.append)
            engine = Engine(load_rules(), clock=FastClock(SPEED), state=AlertStore(tmp_path / "alerts.json"))
            observe_only = {(rule, level): None for rule in engine.rules for level in (1, 2, 3)}
            del observe_only[("thermal_runaway", 3)]
            service = alert_service_for(pipeline, engine, alertmanager_url=am.url, resend_interval_s=10,
                                   policy=ActionPolicy(overrides=observe_only))
            add_routes(pipeline.app, service)
            async with service, pipeline:
                await eventually(lambda: readings)
                fleet.start_scenario(load_scenario("thermal_runaway"), speed=SPEED)
                started = time.monotonic()
                key = f"thermal_runaway@{site}/{CAB}/{SLOT}"

                def runaway_history():
                    return [(h["kind"], h["to"]) for h in service.store.history() if h.get("key") == key]

                await eventually(lambda: ("escalate", 3) in runaway_history(), timeout_s=40)
                l3_after = time.monotonic() - started
                assert runaway_history()[:3] == [("raise", 1), ("escalate", 2), ("escalate", 3)], runaway_history()

                # Level 3 cut the slot off: written 0, read back 0, and the collector sees it.
                cutoff = await eventually(lambda: [r for r in service.actions.recent
                                                   if r.actor == "rule:thermal_runaway@level3"])
                assert (cutoff[0].result, cutoff[0].command, cutoff[0].slot, cutoff[0].value, cutoff[0].readback) == \
                    ("ok", "slot_output", SLOT, 0, 0)
                assert cab.state.slots[SLOT - 1].output_enabled is False
                await eventually(lambda: readings[-1].slots[SLOT - 1].output_enabled is False)
                assert [r.actor for r in service.actions.recent] == ["rule:thermal_runaway@level3"]

                # Alertmanager: the level-3 alert with its labels, lower levels on the slot inhibited.
                held = await eventually(lambda: am_alerts(am, alertname="thermal_runaway", level="3"))
                assert held[0]["labels"] == {"alertname": "thermal_runaway", "rule": "thermal_runaway", "level": "3",
                                             "severity": "critical", "site": site, "cabinet": CAB, "slot": str(SLOT),
                                             "battery": "NM48-FAULTY001"}
                assert held[0]["status"]["state"] == "active"
                inhibited = await eventually(lambda: [
                    a for a in am_alerts(am, site=site, cabinet=CAB, slot=str(SLOT))
                    if a["labels"]["level"] in ("1", "2") and a["status"]["inhibitedBy"]])
                assert all(a["status"]["state"] == "suppressed" for a in inhibited)
                assert not am_alerts(am, alertname="thermal_runaway", level="2"), "escalation resolves level 2"

                # The on-call receiver was paged for level 3.
                page = await rx.wait_for(lambda a: a["labels"].get("alertname") == "thermal_runaway"
                                         and a["labels"].get("level") == "3" and a["status"] == "firing",
                                         timeout_s=10, receiver="critical")
                assert page[2]["annotations"]["action"]
        finally:
            await sim.stop()

    # InfluxDB: the command point (who/what/read-back) and the alert points for annotations.
    commands = influxdb.query('SELECT * FROM "command"')
    assert any(c["actor"] == "rule:thermal_runaway@level3" and c["ok"] is True and c["readback"] == 0
               and c["slot"] == str(SLOT) and c["cabinet"] == CAB for c in commands), commands
    alerts = influxdb.query('SELECT * FROM "alert" WHERE "rule" = \'thermal_runaway\'')
    assert [(a["kind"], a["level"]) for a in alerts][:3] == [("raise", 1), ("escalate", 2), ("escalate", 3)]
    assert l3_after < 40
