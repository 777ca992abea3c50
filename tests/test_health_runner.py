"""cascade health analyse|report against a real InfluxDB and Alertmanager (the shipped routing): the
stored stream of simulated packs in, charge_session / battery_health / alert points and level-1 grading
alerts out, the grading report exported as CSV and JSON."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import urllib.request
from pathlib import Path

from core.model import BLE_GATEWAY_MODEL, CabinetReading, VehicleReading
from exporters.influx.schema import encode_points
from health.cli import main as health_main
from health.runner import InfluxStore, analyse, push_alerts
from health.synth import PackSpec, simulate
from health.texts import HealthTexts
from notifier.messages import compose
from notifier.webhook import WebhookAlert

PACKS = [
    PackSpec("KEEP-1", fade_per_cycle=0.0001, seed=11, cabinet="C0001", slot=1, vehicle="V0001"),
    PackSpec("RESTRICT-1", capacity_ah=15.6, seed=12, cabinet="C0001", slot=2, vehicle="V0002"),
    PackSpec("RETIRE-1", capacity_ah=13.0, seed=13, site="site-02", cabinet="C0002", slot=1, vehicle="V0003"),
]
DAYS = list(range(0, 8))


def _lines() -> tuple[list[str], int, int]:
    points: list[CabinetReading | VehicleReading] = []
    first = last = None
    for spec in PACKS:
        for t_ns, pack, place in simulate(spec, DAYS):
            first = t_ns if first is None else min(first, t_ns)
            last = t_ns if last is None else max(last, t_ns)
            if place.kind == "vehicle":
                points.append(VehicleReading(vehicle_id=place.device, fleet=place.site, timestamp_ns=t_ns,
                                             battery=pack))
            else:
                points.append(CabinetReading(cabinet_id=place.device, site=place.site, model="reference-cabinet",
                                             timestamp_ns=t_ns, slots=[pack]))
    lines, skipped = encode_points(points)
    assert not skipped
    return lines, first, last


def _write(url: str, lines: list[str]) -> None:
    for i in range(0, len(lines), 20000):
        req = urllib.request.Request(f"{url}/write?db=cascade&precision=ns", data="\n".join(lines[i:i + 20000]).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 204


def test_analyse_stores_grades_alerts_and_exports_the_report(influxdb, alertmanager, tmp_path: Path) -> None:
    lines, first, last = _lines()
    _write(influxdb.url, lines)
    store = InfluxStore(influxdb.url, influxdb.database)
    until = last + 10**9
    result = analyse(store, first, until)
    grades = {r.battery_id: r for r in result.records}
    assert {b: r.grade for b, r in grades.items()} == {"KEEP-1": "keep", "RESTRICT-1": "restrict",
                                                       "RETIRE-1": "retire"}
    assert grades["RETIRE-1"].site == "site-02" and grades["RETIRE-1"].place_kind == "cabinet"
    assert abs(grades["RESTRICT-1"].soh_pct - 78.0) < 2.0
    assert result.readings == len(lines) - sum(1 for line in lines if line.startswith("vehicle,"))

    # Stored: every session (one a day per pack, plus the top-ups after storage), one health row per pack,
    # one alert point per pack that newly crossed a limit.
    assert influxdb.count("charge_session", "charge_ah") == len(result.sessions) >= 3 * len(DAYS)
    per_cabinet = influxdb.query('SELECT count("charge_ah") FROM "charge_session" WHERE "kind" = \'cabinet\' '
                                 'GROUP BY "place"')
    assert {r["place"] for r in per_cabinet} == {"C0001", "C0002"}
    health = influxdb.query('SELECT "grade", "soh_pct", "capacity_ah", "site" FROM "battery_health" GROUP BY "battery"')
    assert {r["battery"]: r["grade"] for r in health} == {"KEEP-1": "keep", "RESTRICT-1": "restrict",
                                                          "RETIRE-1": "retire"}
    alerts = influxdb.query('SELECT "level", "battery", "summary" FROM "alert" GROUP BY "rule"')
    assert sorted((a["rule"], a["battery"], a["level"]) for a in alerts) == [
        ("battery_restrict", "RESTRICT-1", 1), ("battery_retire", "RETIRE-1", 1)]
    assert "电池" in alerts[0]["summary"]

    # Pushed like any warning: level 1, severity notice, routed to the operator's app (receiver notice).
    fired, resolved = asyncio.run(push_alerts(result, alertmanager.url))
    assert (fired, resolved) == (2, 0)
    pushed = {a["labels"]["alertname"]: a for a in alertmanager.alerts()}
    assert set(pushed) == {"battery_restrict", "battery_retire"}
    retire = pushed["battery_retire"]
    assert {k: retire["labels"][k] for k in ("level", "severity", "site", "cabinet", "slot", "battery")} == {
        "level": "1", "severity": "notice", "site": "site-02", "cabinet": "C0002", "slot": "1",
        "battery": "RETIRE-1"}
    assert [r["name"] for r in retire["receivers"]] == ["notice"]
    assert retire["annotations"]["summary"] == "L1 电池分级 建议退役：SOH 低于 70%（D-4.2）（site-02/C0002 1号仓）"
    assert "SOH" in retire["annotations"]["diagnosis"] and "BMS 上报 96 %" in retire["annotations"]["diagnosis"]
    # What the operator's app shows for it (the notifier's composition of the webhook alert).
    app = compose(WebhookAlert("firing", retire["labels"], retire["annotations"], "", retire["startsAt"], "", ""),
                  "zh_CN", dt.UTC)
    assert app["title"] == "一级预警：site-02/C0002 1号仓"
    assert app["text"].startswith("电池分级 建议退役：SOH 低于 70%（D-4.2）\n实测容量 ")  # the action names it
    assert app["text"].count("RETIRE-1") == 1
    assert "下次换电时退出运营" in app["text"]

    # Idempotent: the same range again writes the same points and raises nothing new.
    again = analyse(store, first, until)
    assert again.changed() == [] and again.recovered() == []
    assert influxdb.count("charge_session", "charge_ah") == len(result.sessions)
    assert len(influxdb.query('SELECT "level" FROM "alert"')) == 2

    # The grading report, as CSV and JSON.
    out_csv, out_json = tmp_path / "grades.csv", tmp_path / "grades.json"
    assert health_main(["--influx", influxdb.url, "report", "--format", "csv", "--out", str(out_csv),
                        "--since", "0"]) == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert {r["battery_id"]: r["grade"] for r in rows} == {"KEEP-1": "keep", "RESTRICT-1": "restrict",
                                                          "RETIRE-1": "retire"}
    assert float(next(r for r in rows if r["battery_id"] == "KEEP-1")["soh_pct"]) > 95
    assert health_main(["--influx", influxdb.url, "report", "--format", "json", "--out", str(out_json),
                        "--since", "0"]) == 0
    doc = json.loads(out_json.read_text(encoding="utf-8"))
    assert doc["batteries"][0]["grade"] in ("keep", "restrict", "retire")
    assert {lim["clause"] for lim in doc["limits"]} == {"D-4.2", "P-5.1.1.3", "P-5.1.1.4"}
    assert sorted(b["battery_id"] for b in doc["batteries"]) == ["KEEP-1", "RESTRICT-1", "RETIRE-1"]


def test_a_ble_gateways_packs_are_of_the_kind_gateway(influxdb) -> None:
    """A gateway's report is stored as slot points under the gateway's id and a cabinet point of model
    ble-gateway (collectors.ble.wire.to_reading): the report says gateway, not cabinet."""
    points = []
    for spec in (PackSpec("GW-PACK-1", seed=21, cabinet="G000001", slot=2, vehicle="V0009", site="bj"),
                 PackSpec("CAB-PACK-1", seed=22, cabinet="C0001", slot=1, vehicle="V0010")):
        model = BLE_GATEWAY_MODEL if spec.cabinet.startswith("G") else "reference-cabinet"
        for t_ns, pack, place in simulate(spec, [0, 1]):
            if place.kind != "vehicle":
                points.append(CabinetReading(cabinet_id=place.device, site=place.site, model=model, timestamp_ns=t_ns,
                                             slots=[pack], extra={"packs": 1} if model == BLE_GATEWAY_MODEL else {}))
    lines, skipped = encode_points(points)
    assert not skipped
    _write(influxdb.url, lines)
    first, last = min(p.timestamp_ns for p in points), max(p.timestamp_ns for p in points)
    result = analyse(InfluxStore(influxdb.url, influxdb.database), first, last + 10**9)
    kinds = {r.battery_id: (r.place, r.place_kind, r.slot) for r in result.records}
    assert kinds == {"GW-PACK-1": ("G000001", "gateway", 2), "CAB-PACK-1": ("C0001", "cabinet", 1)}
    stored = influxdb.query('SELECT "grade", "kind" FROM "battery_health" GROUP BY "battery", "kind"')
    assert {(p["battery"], p["kind"]) for p in stored} >= {("GW-PACK-1", "gateway"), ("CAB-PACK-1", "cabinet")}
    gateway_pack = next(r for r in result.records if r.battery_id == "GW-PACK-1")
    assert HealthTexts("en").where(gateway_pack) == "bj/BLE gateway G000001 slot 2"


def test_a_pack_no_longer_graded_so_is_resolved(influxdb, alertmanager) -> None:
    lines, first, last = _lines()
    _write(influxdb.url, [line for line in lines if "KEEP-1" in line])
    store = InfluxStore(influxdb.url, influxdb.database)
    # The previous run graded KEEP-1 "restrict" in cabinet C0001 slot 1.
    _write(influxdb.url, ['battery_health,battery=KEEP-1,kind=cabinet,site=site-01 grade="restrict",'
                          f'place="C0001",slot=1i {first}'])
    result = analyse(store, first, last + 10**9)
    assert [b for b, _ in result.recovered()] == ["KEEP-1"]
    fired, resolved = asyncio.run(push_alerts(result, alertmanager.url))
    assert (fired, resolved) == (0, 1)


def test_cascade_health_analyse_command(influxdb, alertmanager, capsys) -> None:
    """The command line: analyse a range, print the grades, push the alerts (English by option)."""
    from cascade.cli import main as cascade_main

    lines, first, last = _lines()
    _write(influxdb.url, lines)
    argv = ["health", "--influx", influxdb.url, "analyse", "--since", str(first / 1e9), "--until",
            str((last + 10**9) / 1e9), "--alertmanager", alertmanager.url, "--language", "en"]
    assert cascade_main(argv) == 0
    out = capsys.readouterr().out
    assert "3 batteries" in out and "keep in service (keep) 1, restrict 1, retire 1" in out
    assert "RETIRE-1: retire (SOH" in out and "alerts: 2 firing, 0 resolved" in out
    pushed = {a["labels"]["alertname"]: a for a in alertmanager.alerts()}
    assert pushed["battery_retire"]["annotations"]["summary"] == (
        "L1 Battery grade retire: SOH below 70 % (D-4.2) at site-02/C0002 slot 1")
    assert cascade_main(["health", "--influx", influxdb.url, "analyse", "--since", "later"]) == 2


def test_a_later_run_continues_the_trend_of_earlier_ones(influxdb) -> None:
    """Capacity estimates stored by an earlier run (charge_session) join the next run's fade trend."""
    from health.runner import analyse_stream, read_stream

    lines, first, last = _lines()
    _write(influxdb.url, lines)
    store = InfluxStore(influxdb.url, influxdb.database)
    mid, until = first + 4 * 86400 * 10**9, last + 10**9
    earlier = analyse(store, first, mid)
    later = {r.battery_id: r for r in analyse(store, mid, until).records}
    alone, _, _ = analyse_stream(read_stream(store, mid, until))
    for battery in ("KEEP-1", "RETIRE-1"):
        stored = sum(1 for s in earlier.sessions if s.battery_id == battery and s.capacity_ah)
        assert stored >= 3
        assert later[battery].capacity_estimates == stored + alone[battery].estimate().capacity_estimates


def test_ocv_tables_are_checked_and_chosen_by_maker_then_chemistry(tmp_path: Path) -> None:
    import pytest

    from core.model import Chemistry, SlotReading
    from health.analyser import Settings
    from health.runner import HealthError, _settings_for, load_ocv_tables

    good = tmp_path / "ocv.yaml"
    volts = [2.5, 3.1, 3.3, 3.4, 3.5, 3.6, 3.65, 3.7, 3.8, 3.9, 4.0, 4.1, 4.2]
    good.write_text(f"NM48: {volts}\nLFP: {[v - 0.4 for v in volts]}\n")
    tables = load_ocv_tables(good)
    nmc = SlotReading(slot=1, battery_maker="NM48", chemistry=Chemistry.NMC)
    lfp = SlotReading(slot=1, battery_maker="other", chemistry=Chemistry.LFP)
    assert _settings_for(nmc, Settings(), tables).ocv_curve == tuple(volts)
    assert _settings_for(lfp, Settings(), tables).ocv_curve[0] == pytest.approx(2.1)
    assert _settings_for(SlotReading(slot=1), Settings(), tables).ocv_curve is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("NM48: [3.0, 2.9]\n")
    with pytest.raises(HealthError, match="bad.yaml.*'NM48'.*13 increasing voltages"):
        load_ocv_tables(bad)
