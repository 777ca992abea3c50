"""cascade bench vehicles: a smoke run with tiny counts (real Mosquitto for the burst) prints its table
and its JSON; the corpus is what the bench says it is. Speed is measured by the bench, never asserted here."""

from __future__ import annotations

import json
import time

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
    for row in ("MQTT path, reports/s per core", "HTTPS batches of 100", "Cascade / baseline",
                "together, per vehicle (B)", "1 M vehicles at 1/min = 16,667/s", "lag p50 / p95 / max (ms)"):
        assert row in out, row
    stored = next(line for line in out.splitlines() if "stored / lost" in line)
    assert stored.split()[3:6] == ["300", "/", "0"]  # every report of the burst reached the worker
    assert time.monotonic() - start < 10

    assert bench.main(["--quick", "--burst", "0", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    t = figures["throughput"]
    for path in ("mqtt", "https"):  # the bench refuses to time refusals: everything was stored
        assert t[f"cascade_{path}"]["stored"] == t[f"cascade_{path}"]["reports"] == t[f"baseline_{path}"]["stored"]
        assert t[f"cascade_{path}"]["lines"] == 2 * t[f"cascade_{path}"]["reports"]  # vehicle + vehicle_battery
    assert figures["memory"]["tracked"] == 2_000 and figures["memory"]["bytes_per_tracked_vehicle"] > 0
    assert figures["headline"]["reports_per_s"] == 1_000_000 / 60 and "burst" not in figures
