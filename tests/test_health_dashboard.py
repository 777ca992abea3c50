"""The second-life dashboard (dashboards/health.py) on a live InfluxDB: every query of every panel and
variable returns data from what `cascade health analyse` stores. ``health_lines`` is also what
tests/test_dashboards.py writes for it on its live stack."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from typing import Any

from exporters.influx.schema import encode_points
from health.analyser import BatteryAnalyser
from health.report import assess
from health.runner import _alert_event, health_line, session_line
from health.synth import PackSpec, simulate
from health.texts import HealthTexts

BATTERY = "DASH-RETIRE"


def health_lines(now: float) -> list[str]:
    """charge_session, battery_health and grading alert points of three simulated packs (one of each grade),
    re-timed into the last half hour."""
    now_ns = int(now * 1e9)
    lines: list[str] = []
    for spec in (PackSpec("DASH-KEEP", seed=21, cabinet="C0001", slot=3),
                 PackSpec("DASH-RESTRICT", capacity_ah=15.6, seed=23, cabinet="C0001", slot=4),
                 PackSpec(BATTERY, capacity_ah=13.0, seed=22, site="site-02", cabinet="C0002", slot=1)):
        analyser = BatteryAnalyser(spec.battery_id)
        sessions = []
        for t_ns, pack, place in simulate(spec, [0, 1, 2]):
            sessions += analyser.feed(t_ns, pack, place)
        record = assess(analyser.estimate())
        for i, session in enumerate(sessions):
            session.start_ns = now_ns - (len(sessions) - i) * 60 * 10**9
            lines.append(session_line(session))
        lines.append(health_line(record, now_ns - 30 * 10**9))
        if record.grade in ("restrict", "retire"):
            alert_lines, _ = encode_points([_alert_event(record, HealthTexts(), now_ns - 20 * 10**9)])
            lines += alert_lines
    return lines


def _rows(url: str, query: str) -> int:
    q = urllib.parse.urlencode({"db": "cascade", "q": query, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=10) as resp:
        body: dict[str, Any] = json.load(resp)
    rows = 0
    for result in body["results"]:
        assert "error" not in result, (query, result)
        for series in result.get("series", []):
            cols = [i for i, c in enumerate(series["columns"]) if c != "time"]
            rows += sum(1 for row in series["values"] if any(row[i] is not None for i in cols))
    return rows


def test_every_second_life_query_returns_data(influxdb) -> None:
    import time

    from dashboards.build import build_all

    lines = health_lines(time.time())
    req = urllib.request.Request(f"{influxdb.url}/write?db=cascade&precision=ns", data="\n".join(lines).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    model = build_all(lang="en")["cascade-second-life"]
    queries = [(p["title"], tg["refId"], tg["query"]) for p in model["panels"] for tg in p["targets"]]
    queries += [(v["name"], "variable", v["query"]) for v in model["templating"]["list"]]
    assert len(queries) >= 14
    for where, ref, text in queries:
        query = text.replace("$timeFilter", "time > now() - 1h").replace("$battery", BATTERY)
        assert not re.search(r"\$\w", query), query
        assert _rows(influxdb.url, query) > 0, f"{where} / {ref}: {query}"
    # Values, not just rows: one pack of each grade.
    ranking = next(p for p in model["panels"] if p["title"] == "Fleet health ranking")
    q = urllib.parse.urlencode({"db": "cascade", "q": ranking["targets"][0]["query"].replace(
        "$timeFilter", "time > now() - 1h"), "epoch": "ms"})
    with urllib.request.urlopen(f"{influxdb.url}/query?{q}", timeout=10) as resp:
        series = json.load(resp)["results"][0]["series"]
    grades = {s["tags"]["battery"]: dict(zip(s["columns"], s["values"][0]))["grade"] for s in series}
    assert grades == {"DASH-KEEP": "keep", "DASH-RESTRICT": "restrict", BATTERY: "retire"}
