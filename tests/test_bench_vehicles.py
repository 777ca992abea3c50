"""cascade bench vehicles: a smoke run with tiny counts (real Mosquitto for the burst) prints its table
and its JSON; the corpus is what the bench says it is. Speed is measured by the bench, never asserted here."""

from __future__ import annotations

import json
import time

import pytest

from bench import vehicles as bench
from cascade.cli import main as cascade_main
from collectors.vehicles.wire import decode
from tests.fixtures.procs import require_binary


def test_corpus_is_varied_minutely_reports_in_device_time_order():
    reports = bench.make_reports(50, 200)
    assert len({r.payload for r in reports}) == 200 and len({r.vehicle for r in reports}) == 50
    msgs = [decode(r.payload) for r in reports]
    assert [m.ts for m in msgs] == sorted(m.ts for m in msgs)
    first = [m for m in msgs if m.vehicle == "V000007"]
    assert [m.seq for m in first] == [1, 2, 3, 4]
    assert [b.ts - a.ts for a, b in zip(first, first[1:])] == [60_000] * 3  # one report a minute
    assert len({m.pos.lat for m in msgs}) == 200 and len({m.battery.voltage_v for m in msgs}) > 150
    assert all(r.topic == f"cascade/v1/{bench.FLEET}/{r.vehicle}/telemetry" for r in reports)


def test_quick_run_prints_the_table_and_json_through_the_cascade_cli(capsys):
    require_binary("mosquitto")
    start = time.monotonic()
    assert cascade_main(["bench", "vehicles", "--quick", "--burst", "300"]) == 0
    out = capsys.readouterr().out
    for row in ("in process: µs CPU per report, baseline (json + Point)", "Cascade decode + checks + encode",
                "MQTT path, reports/s per core", "HTTPS batches of 100", "Cascade / baseline",
                "together, per vehicle (B)", "1 M vehicles at 1/min = 16,667/s", "lag p50 / p95 / max (ms)",
                "µs CPU per report: worker process, broker", "µs: MQTT client + ingest (fleet) + broker",
                "through Mosquitto (4 connections): aiomqtt", "through Mosquitto (4 connections): paho",
                "worker CPU per report through the broker, before / after"):
        assert row in out, row
    stored = [line for line in out.splitlines() if "stored / lost" in line]
    assert [line.split()[3:6] for line in stored] == [["300", "/", "0"]] * 2  # both consumers got every report
    assert time.monotonic() - start < 20

    assert bench.main(["--quick", "--burst", "0", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    t = figures["throughput"]
    for path in ("mqtt", "https"):  # the bench refuses to time refusals: everything was stored
        assert t[f"cascade_{path}"]["stored"] == t[f"cascade_{path}"]["reports"] == t[f"baseline_{path}"]["stored"]
        assert t[f"cascade_{path}"]["lines"] == 2 * t[f"cascade_{path}"]["reports"]  # vehicle + vehicle_battery
    assert figures["memory"]["tracked"] == 2_000 and figures["memory"]["bytes_per_tracked_vehicle"] > 0
    assert figures["headline"]["reports_per_s"] == 1_000_000 / 60 and "burst" not in figures


def test_burst_json_splits_the_worker_into_client_and_ingest_and_keeps_the_broker_apart(capsys):
    require_binary("mosquitto")
    assert bench.main(["--quick", "--burst", "200", "--consumer", "paho", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    burst, split = figures["burst"]["paho"], figures["through_broker"]["paho"]
    assert list(figures["burst"]) == ["paho"] and burst["stored"] == 200 and burst["lost"] == 0
    assert burst["received"] == 200 and 1 <= burst["batches"] <= 200  # several reports per event-loop wake-up
    assert burst["worker_us_per_report"] > 0 and burst["broker_us_per_report"] >= 0
    assert split["total_us"] == split["client_us"] + split["ingest_us"] + split["broker_us"]
    assert split["ingest_us"] == figures["throughput"]["cascade_mqtt"]["us_per_report"]
    assert split["cores"] == pytest.approx(split["reports_per_s"] * split["total_us"] / 1e6)
