"""`cascade health`: the report's place_kind and last_seen_ns come from what was stored, `analyse` prints
the grades (counts, changed packs) in the operators' language, time refusals too, and an Alertmanager that
cannot be reached is an error (exit 1), not "0 resolved"."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.request

import pytest

from health.analyser import ChargeSession, Place
from health.cli import main as health_main
from health.cli import summary_lines
from health.report import COLUMNS, HealthRecord, read_report_rows
from health.runner import AnalysisResult, HealthError, health_line, push_alerts
from health.texts import HealthTexts
from tests.fixtures.ports import free_port

T0 = 1_765_000_000 * 10**9


def record(battery: str, kind: str, grade: str = "unknown", last_seen_ns: int = T0, soh: float | None = None,
           crossed: str = "") -> HealthRecord:
    values: dict = {name: None for name in COLUMNS}
    values.update(battery_id=battery, site="site-01", place="C0001" if kind == "cabinet" else "V0001",
                  place_kind=kind, slot=2 if kind == "cabinet" else None, grade=grade, limits_crossed=crossed,
                  capacity_estimates=0, resistance_steps=0, equivalent_cycles=0.0, energy_in_kwh=0.0,
                  energy_out_kwh=0.0, charge_sessions=1, last_seen_ns=last_seen_ns, soh_pct=soh)
    return HealthRecord(**values)


def _write(url: str, lines: list[str]) -> None:
    req = urllib.request.Request(f"{url}/write?db=cascade&precision=ns", data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


def test_the_report_carries_place_kind_and_each_packs_own_last_seen(influxdb, tmp_path) -> None:
    until = T0 + 3600 * 10**9
    _write(influxdb.url, [health_line(record("PACK-C", "cabinet", last_seen_ns=T0 + 5), until),
                          health_line(record("PACK-V", "vehicle", last_seen_ns=T0 + 7), until)])
    out = tmp_path / "grades.csv"
    assert health_main(["--influx", influxdb.url, "report", "--format", "csv", "--out", str(out), "--since", "0"]) == 0
    rows = {r["battery_id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert {b: (r["place_kind"], r["last_seen_ns"]) for b, r in rows.items()} == {
        "PACK-C": ("cabinet", str(T0 + 5)), "PACK-V": ("vehicle", str(T0 + 7))}
    assert health_main(["--influx", influxdb.url, "report", "--format", "json", "--out", str(tmp_path / "g.json"),
                        "--since", "0"]) == 0
    doc = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert {b["battery_id"]: b["place_kind"] for b in doc["batteries"]} == {"PACK-C": "cabinet", "PACK-V": "vehicle"}


def test_rows_stored_before_last_seen_was_a_field_fall_back_to_the_point_time() -> None:
    rows = read_report_rows([{"battery_id": "OLD", "kind": "cabinet", "time": 42, "grade": "keep"}])
    assert (rows[0]["place_kind"], rows[0]["last_seen_ns"]) == ("cabinet", 42)


def _result() -> AnalysisResult:
    records = [record("A", "cabinet"), record("B", "cabinet", "retire", soh=65.0, crossed="soh_below_retire"),
               record("C", "vehicle", "keep", soh=97.0)]
    previous = {"C": {"grade": "restrict"}, "B": {"grade": "retire"}}
    return AnalysisResult(records, [], 1234, T0, previous)


def test_analyse_prints_the_count_per_grade_and_the_packs_that_changed_grade() -> None:
    result = _result()
    place = Place("site-01", "C0001", 1)
    result.sessions = [ChargeSession("A", place, 1, reason="full"), ChargeSession("A", place, 2, reason="full"),
                       ChargeSession("B", place, 3, reason="protection")]
    en = "\n".join(summary_lines(result, HealthTexts("en")))
    assert "1234 readings, 3 batteries, 3 charge sessions (charged full (full) 2, protection cut-off (protection) 1)" \
        in en
    assert "grades: keep in service (keep) 1, retire 1, not graded (unknown) 1" in en
    assert "unknown 1: no capacity measured yet" in en
    assert "grade changed since the previous run: 1" in en
    assert "  C: keep in service (keep) (SOH 97.0 %; -); previous run: restrict" in en
    # restrict/retire: always shown, with the limits crossed in words
    assert "  B: retire (SOH 65.0 %; SOH below 70 % (D-4.2)); previous run: retire" in en
    assert "  A:" not in en  # never graded: counted as unknown, not listed
    # Chinese by default: the grade and ending names too, each with its stable code (as in the report) beside it.
    zh = "\n".join(summary_lines(result, HealthTexts()))
    assert "1234 条读数，3 块电池，3 次充电（已充满（full） 2，保护切断（protection） 1）" in zh
    assert "分级：继续使用（keep） 1，建议退役（retire） 1，未分级（unknown） 1" in zh
    assert "与上次分析相比分级有变化：1" in zh and "上次：限制使用（restrict）" in zh
    assert "SOH 低于 70%（D-4.2）" in zh and "keep 1" not in zh and "charged" not in zh


def test_time_refusals_are_chinese_by_default_and_english_by_option(capsys) -> None:
    assert health_main(["--influx", "http://127.0.0.1:1", "analyse", "--since", "later"]) == 2
    assert "'later' 不是时间" in capsys.readouterr().err
    assert health_main(["--influx", "http://127.0.0.1:1", "analyse", "--since", "later", "--language", "en"]) == 2
    assert "'later' is not a time" in capsys.readouterr().err
    assert health_main(["--language", "en", "--influx", "http://127.0.0.1:1", "report", "--since", "x"]) == 2
    assert "'x' is not a time" in capsys.readouterr().err
    assert health_main(["--influx", "http://127.0.0.1:1", "analyse", "--since", "1h", "--until", "2h"]) == 2
    assert "--since 必须早于 --until" in capsys.readouterr().err


def test_an_unreachable_alertmanager_is_an_error_even_with_nothing_to_push(influxdb, capsys) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(HealthError, match="Alertmanager cannot be reached"):
        asyncio.run(push_alerts(AnalysisResult([], [], 0, T0), nobody, timeout_s=2.0))
    code = health_main(["--influx", influxdb.url, "analyse", "--since", "1h", "--alertmanager", nobody])
    captured = capsys.readouterr()
    assert code == 1 and "Alertmanager cannot be reached" in captured.err and nobody in captured.err
    assert "0 条读数" in captured.out and "告警：" not in captured.out


def test_report_to_stdout(influxdb, capsys) -> None:
    _write(influxdb.url, [health_line(record("PACK-C", "cabinet"), T0)])
    assert health_main(["--influx", influxdb.url, "report", "--format", "csv", "--since", "0"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["place_kind"] == "cabinet"
