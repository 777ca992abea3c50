"""``cascade health analyse``: read the stored stream from InfluxDB, run the estimators per battery,
write ``charge_session`` and ``battery_health`` points (docs/schema.md) and push the grading alerts.

    result = analyse(InfluxStore(url, "cascade"), since_ns, until_ns)          # compute + write
    await push_alerts(result, "http://127.0.0.1:9093", language="zh_CN")       # level 1, operator's app

Readings are read in time windows (``chunk_s``) across ``slot`` (cabinets, and BLE gateways: the place kind
``gateway`` for the devices stored as model ``ble-gateway``) and ``vehicle_battery`` (vehicles), merged in
time order and fed to one :class:`~health.analyser.BatteryAnalyser` per ``battery_id``. Re-running a range
writes the same points again (same series and timestamps): the analysis is idempotent. A pack graded
``restrict`` or ``retire`` raises a level-1 alert (labels as the warning engine's: ``alertname`` = ``rule`` =
``battery_restrict`` / ``battery_retire``, ``level`` 1, ``severity`` notice, ``site``, ``cabinet``, ``slot``,
``battery``), which Alertmanager routes to the operator's app; one that was graded so by the previous run and
is no longer is resolved.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from core.errors import CascadeError
from core.events import AlertEvent
from core.model import BLE_GATEWAY_MODEL, Chemistry, SlotReading
from exporters.influx.lineprotocol import encode_line
from exporters.influx.schema import encode_points
from health.analyser import BatteryAnalyser, CapacityEstimate, ChargeSession, Place, Settings
from health.ocv import SOC_POINTS
from health.report import HealthRecord, assess, health_fields, session_fields
from health.texts import HealthTexts

__all__ = ["ALERT_RULES", "AnalysisResult", "HealthError", "InfluxStore", "alert_labels", "analyse", "analyse_stream",
           "load_ocv_tables", "push_alerts", "read_stream"]

log = logging.getLogger(__name__)

#: Grade -> the alert rule id it raises (level 1).
ALERT_RULES = {"restrict": "battery_restrict", "retire": "battery_retire"}
# The reading fields the estimators use.
_FIELDS = ("battery_id", "voltage_v", "charge_current_a", "soc_pct", "soh_pct", "charge_count", "temperature_c",
           "cell_temperature_max_c", "cell_temperature_min_c", "battery_state", "nominal_capacity_ah",
           "nominal_voltage_v", "chemistry", "cell_count", "bms_protection", "charger_protection")
_INTS = {"charge_count", "battery_state", "chemistry", "cell_count", "bms_protection", "charger_protection"}


class HealthError(CascadeError):
    """InfluxDB or Alertmanager cannot be used: what, where, and the fix."""


class InfluxStore:
    """InfluxQL over the v1 HTTP API (``/query`` chunked, ``/write``); InfluxDB 1.x."""

    def __init__(self, url: str, database: str = "cascade", *, username: str = "", password: str = "",
                 timeout_s: float = 120.0) -> None:
        self.url, self.database, self.timeout_s = url.rstrip("/"), database, timeout_s
        self._headers: dict[str, str] = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def rows(self, influxql: str) -> Iterator[dict[str, Any]]:
        """Every row of the answer as a dict (columns plus the series' tags), times in ns, streamed."""
        params = urllib.parse.urlencode({"db": self.database, "q": influxql, "epoch": "ns", "chunked": "true",
                                         "chunk_size": "20000"})
        request = urllib.request.Request(f"{self.url}/query?{params}", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                for line in resp:
                    if not line.strip():
                        continue
                    body = json.loads(line)
                    for result in body.get("results", []):
                        if "error" in result:
                            raise HealthError(f"InfluxDB refused {influxql!r}: {result['error']}", source=self.url,
                                              fix="check the database name (--database)")
                        for series in result.get("series", []):
                            tags = series.get("tags") or {}
                            cols = series["columns"]
                            for values in series.get("values", []):
                                yield {**tags, **dict(zip(cols, values))}
        except urllib.error.HTTPError as err:
            raise HealthError(f"InfluxDB answered {err.code} to {influxql!r}", source=self.url,
                              fix="check the URL, database and credentials") from None
        except (OSError, ValueError) as err:
            raise HealthError(f"InfluxDB query failed: {err}", source=self.url,
                              fix="start InfluxDB or give its URL with --influx") from None

    def write(self, lines: list[str], batch: int = 5000) -> None:
        for i in range(0, len(lines), batch):
            data = "\n".join(lines[i:i + batch]).encode()
            params = urllib.parse.urlencode({"db": self.database, "precision": "ns"})
            request = urllib.request.Request(f"{self.url}/write?{params}", data=data, method="POST",
                                             headers=self._headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    resp.read()
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:200]
                raise HealthError(f"InfluxDB refused the health points: {err.code} {detail}", source=self.url,
                                  fix="check the database exists and the user may write") from None
            except OSError as err:
                raise HealthError(f"writing to InfluxDB failed: {err}", source=self.url,
                                  fix="start InfluxDB or give its URL with --influx") from None


def _pack(row: dict[str, Any]) -> SlotReading:
    values: dict[str, Any] = {k: row.get(k) for k in _FIELDS}
    for k, v in values.items():  # JSON gives 34 for a stored 34.0: the types must survive the round trip
        if v is not None and k != "battery_id":
            values[k] = int(v) if k in _INTS else float(v)
    slot = row.get("slot")
    return SlotReading(slot=int(slot) if slot not in (None, "") else 1, **values)


def _gateways(store: InfluxStore) -> frozenset[str]:
    """The ids of BLE gateways: their readings are ``cabinet`` points of model ``ble-gateway`` (a gateway
    stores one per report, collectors.ble.wire.to_reading); their packs are ``slot`` points like a cabinet's."""
    rows = store.rows(f'SHOW TAG VALUES FROM "cabinet" WITH KEY = "cabinet" WHERE "model" = \'{BLE_GATEWAY_MODEL}\'')
    return frozenset(str(r["value"]) for r in rows if r.get("value"))


def _measurement(store: InfluxStore, measurement: str, since_ns: int, until_ns: int,
                 chunk_s: float) -> Iterator[tuple[int, SlotReading, Place]]:
    select = ", ".join(f'"{f}"' for f in _FIELDS)
    gateways = _gateways(store) if measurement == "slot" else frozenset()
    tags = '"site", "cabinet", "slot"' if measurement == "slot" else '"fleet", "vehicle"'
    start = since_ns
    step = int(chunk_s * 1e9)
    while start < until_ns:
        end = min(until_ns, start + step)
        query = (f'SELECT {select}, {tags} FROM "{measurement}" WHERE time >= {start} AND time < {end} '
                 f'AND "battery_id" != \'\'')
        for row in store.rows(query):
            if not row.get("battery_id"):
                continue
            if measurement == "slot":
                slot, device = row.get("slot"), str(row.get("cabinet") or "")
                place = Place(str(row.get("site") or ""), device, int(slot) if slot not in (None, "") else None,
                              "gateway" if device in gateways else "cabinet")
            else:
                place = Place(str(row.get("fleet") or ""), str(row.get("vehicle") or ""), None, "vehicle")
            yield int(row["time"]), _pack(row), place
        start = end


def read_stream(store: InfluxStore, since_ns: int, until_ns: int,
                chunk_s: float = 3600.0) -> Iterator[tuple[int, SlotReading, Place]]:
    """Every stored pack reading in [since, until), cabinets and vehicles merged in time order."""
    return heapq.merge(_measurement(store, "slot", since_ns, until_ns, chunk_s),
                       _measurement(store, "vehicle_battery", since_ns, until_ns, chunk_s), key=lambda x: x[0])


@dataclass
class AnalysisResult:
    """What one analysis produced: a report row per battery, the sessions closed, the previous grades."""

    records: list[HealthRecord]
    sessions: list[ChargeSession]
    readings: int
    until_ns: int
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)  # battery -> last stored grade row

    def changed(self) -> list[HealthRecord]:
        """Records whose grade is restrict/retire and differs from the previous run's."""
        return [r for r in self.records if r.grade in ALERT_RULES
                and (self.previous.get(r.battery_id) or {}).get("grade") != r.grade]

    def recovered(self) -> list[tuple[str, dict[str, Any]]]:
        """(battery, previous row) of packs graded restrict/retire before and not so (or differently) now."""
        now = {r.battery_id: r.grade for r in self.records}
        return [(b, row) for b, row in self.previous.items()
                if row.get("grade") in ALERT_RULES and b in now and now[b] != row.get("grade")]


def load_ocv_tables(path: str | Path) -> dict[str, tuple[float, ...]]:
    """OCV tables per pack model (YAML): ``battery_maker`` as the BMS reports it, or a chemistry name
    (``NMC``, ``LFP``, ``LMO``), → the cell's OCV (V) at health.ocv.SOC_POINTS (0, 5, 10, 20 … 90, 95, 100 %)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise HealthError(f"cannot read the OCV tables: {err}", source=str(path),
                          fix="give a YAML file of battery_maker or chemistry -> 13 voltages") from None
    if not isinstance(doc, dict):
        raise HealthError("the OCV tables must be a mapping", source=str(path),
                          fix="write `MAKER: [v0, v5, v10, v20, ..., v95, v100]` per line")
    tables: dict[str, tuple[float, ...]] = {}
    for key, volts in doc.items():
        ok = (isinstance(volts, list) and len(volts) == len(SOC_POINTS)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in volts)
              and all(b > a for a, b in zip(volts, volts[1:])))
        if not ok:
            raise HealthError(f"key {key!r}: expected {len(SOC_POINTS)} increasing voltages at SOC "
                              f"{', '.join(f'{x:g}' for x in SOC_POINTS)} %", source=str(path),
                              fix="measure or copy the cell maker's OCV table at those SOC points")
        tables[str(key)] = tuple(float(v) for v in volts)
    return tables


def _settings_for(pack: SlotReading, settings: Settings, tables: dict[str, tuple[float, ...]]) -> Settings:
    curve = tables.get(pack.battery_maker or "")
    if curve is None and pack.chemistry is not None:
        try:
            curve = tables.get(Chemistry(pack.chemistry).name)
        except ValueError:
            curve = None
    return replace(settings, ocv_curve=curve) if curve is not None else settings


def analyse_stream(stream: Iterable[tuple[int, SlotReading, Place]], settings: Settings | None = None, *,
                   ocv_tables: dict[str, tuple[float, ...]] | None = None,
                   history: dict[str, list[CapacityEstimate]] | None = None,
                   ) -> tuple[dict[str, BatteryAnalyser], list[ChargeSession], int]:
    """Feed a time-ordered stream to one analyser per battery (no I/O). ``ocv_tables``: a pack model's
    own OCV table (:func:`load_ocv_tables`); ``history``: earlier capacity estimates per battery, so the
    fade trend spans runs."""
    analysers: dict[str, BatteryAnalyser] = {}
    sessions: list[ChargeSession] = []
    base = settings or Settings()
    n = 0
    for t_ns, pack, place in stream:
        bid = pack.battery_id
        if not bid:
            continue
        analyser = analysers.get(bid)
        if analyser is None:
            analyser = analysers[bid] = BatteryAnalyser(bid, _settings_for(pack, base, ocv_tables or {}))
            if history and bid in history:
                analyser.seed(history[bid])
        sessions += analyser.feed(t_ns, pack, place)
        n += 1
    for analyser in analysers.values():
        sessions += analyser.finish()
    return analysers, sessions, n


def session_line(s: ChargeSession) -> str:
    tags = {"site": s.place.site, "place": s.place.device, "kind": s.place.kind,
            "slot": None if s.place.slot is None else str(s.place.slot)}
    return encode_line("charge_session", tags, session_fields(s), s.start_ns)


def health_line(r: HealthRecord, t_ns: int) -> str:
    return encode_line("battery_health", {"battery": r.battery_id, "site": r.site, "kind": r.place_kind},
                       health_fields(r), t_ns)


def _previous(store: InfluxStore, until_ns: int) -> dict[str, dict[str, Any]]:
    rows = store.rows(f'SELECT last("grade") AS "grade", last("place") AS "place", last("slot") AS "slot" '
                      f'FROM "battery_health" WHERE time <= {until_ns} GROUP BY "battery", "site", "kind"')
    return {str(r["battery"]): r for r in rows if r.get("battery")}


def _history(store: InfluxStore, before_ns: int) -> dict[str, list[CapacityEstimate]]:
    """Capacity estimates stored by earlier runs (``charge_session`` points before ``before_ns`` that
    carry one and the BMS cycle count), per battery."""
    found: dict[str, list[CapacityEstimate]] = {}
    for r in store.rows('SELECT "battery_id", "capacity_ah", "capacity_sigma_ah", "cycles", "end_ns" FROM '
                        f'"charge_session" WHERE time < {before_ns} AND "capacity_ah" > 0'):
        if r.get("battery_id") and r.get("cycles") is not None and r.get("capacity_sigma_ah"):
            found.setdefault(str(r["battery_id"]), []).append(CapacityEstimate(
                int(r.get("end_ns") or r["time"]), float(r["capacity_ah"]), float(r["capacity_sigma_ah"]), 0.0,
                float(r["cycles"])))
    return found


def analyse(store: InfluxStore, since_ns: int, until_ns: int, *, settings: Settings | None = None,
            write: bool = True, language: str = "zh_CN", chunk_s: float = 3600.0,
            ocv_tables: dict[str, tuple[float, ...]] | None = None) -> AnalysisResult:
    """Analyse [since, until) and (``write``) store the sessions, the health rows (at ``until``) and an
    ``alert`` point for each pack whose grade newly became restrict or retire. Capacity estimates
    stored before ``since`` join the fade trend."""
    previous = _previous(store, until_ns)
    analysers, sessions, n = analyse_stream(read_stream(store, since_ns, until_ns, chunk_s), settings,
                                            ocv_tables=ocv_tables, history=_history(store, since_ns))
    records = [assess(a.estimate()) for a in analysers.values()]
    records.sort(key=lambda r: (r.soh_pct is None, r.soh_pct or 0.0, r.battery_id))
    result = AnalysisResult(records, sessions, n, until_ns, previous)
    if write:
        lines = [session_line(s) for s in sessions]
        lines += [health_line(r, until_ns) for r in records]
        texts = HealthTexts(language)
        events = [_alert_event(r, texts, until_ns) for r in result.changed()]
        alert_lines, _ = encode_points(events)
        store.write(lines + alert_lines)
    return result


def alert_labels(rule: str, site: str, place: str, kind: str, slot: int | str | None, battery: str) -> dict[str, str]:
    """The Alertmanager labels of a grading alert, as the warning engine builds its own
    (alerting.state.alert_labels): level 1, severity notice; a vehicle carries ``vehicle``."""
    labels = {"alertname": rule, "rule": rule, "level": "1", "severity": "notice", "site": site, "cabinet": place}
    if kind == "vehicle":
        labels["vehicle"] = place
    elif slot not in (None, ""):
        labels["slot"] = str(slot)
    labels["battery"] = battery
    return labels


def _alert_event(r: HealthRecord, texts: HealthTexts, t_ns: int) -> AlertEvent:
    notes = texts.annotations(r)
    return AlertEvent(ALERT_RULES[r.grade], r.site, r.place, r.slot if r.place_kind != "vehicle" else None,
                      "notice", 1, 0, "raise", r.soh_pct, r.battery_id, summary=notes["summary"],
                      diagnosis=notes["diagnosis"], action=notes["action"], timestamp_ns=t_ns)


async def push_alerts(result: AnalysisResult, alertmanager_url: str, *, language: str = "zh_CN",
                      hold_s: float = 26 * 3600.0, timeout_s: float = 10.0) -> tuple[int, int]:
    """Fire a level-1 alert for every pack graded restrict or retire (held ``hold_s``: a daily run
    keeps it firing) and resolve those of packs no longer so graded. Returns (fired, resolved);
    HealthError when Alertmanager cannot be reached (even with nothing to push: a run that says "0 firing"
    must mean Alertmanager holds none) or could not take them."""
    from alerting.alertmanager import AlertmanagerPusher

    texts = HealthTexts(language)
    await _check_alertmanager(alertmanager_url, timeout_s)
    fired = resolved = 0
    async with AlertmanagerPusher(alertmanager_url, resend_interval_s=hold_s / 4, timeout_s=timeout_s,
                                  retry_max_s=2.0) as pusher:
        for r in result.records:
            if r.grade in ALERT_RULES:
                labels = alert_labels(ALERT_RULES[r.grade], r.site, r.place, r.place_kind, r.slot, r.battery_id)
                pusher.fire(labels, texts.annotations(r), starts_at=result.until_ns / 1e9)
                fired += 1
        for battery, row in result.recovered():
            labels = alert_labels(ALERT_RULES[row["grade"]], str(row.get("site") or ""), str(row.get("place") or ""),
                                  str(row.get("kind") or ""), row.get("slot"), battery)
            pusher.resolve(labels)
            resolved += 1
        deadline = time.monotonic() + timeout_s * 3
        while pusher.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if pusher.pending:
        raise HealthError(f"Alertmanager did not take {len(pusher.pending)} grading alerts", source=alertmanager_url,
                          fix="start Alertmanager or give its URL with --alertmanager")
    return fired, resolved


async def _check_alertmanager(url: str, timeout_s: float) -> None:
    """HealthError unless Alertmanager answers its status API (``GET /api/v2/status``)."""
    import aiohttp

    status = f"{url.rstrip('/')}/api/v2/status"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.get(status) as resp:
            if resp.status != 200:
                raise HealthError(f"Alertmanager answered {resp.status} to GET /api/v2/status", source=url,
                                  fix="give Alertmanager's URL with --alertmanager (or --no-alerts)")
    except (TimeoutError, aiohttp.ClientError) as err:
        raise HealthError(f"Alertmanager cannot be reached: {type(err).__name__}: {err}", source=url,
                          fix="start Alertmanager (make run starts one) or give its URL with --alertmanager; "
                              "--no-alerts stores the grades without pushing") from None
