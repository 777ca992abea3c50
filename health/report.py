"""One row per battery: the estimate, its grade and flags; exported as CSV or JSON (the grading report).

    record = assess(analyser.estimate())
    write_report([record, ...], "csv", out)      # or "json"
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import IO, Any

from health.analyser import BatteryEstimate, ChargeSession
from health.grading import LIMITS, bms_disagrees, grade, retention_pct

__all__ = ["COLUMNS", "HealthRecord", "assess", "health_fields", "read_report_rows", "session_fields",
           "write_report"]


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """What the grading report says about one battery (units in the names; ``None`` = not measured)."""

    battery_id: str
    site: str
    place: str               # cabinet, gateway or vehicle id last seen
    place_kind: str          # cabinet | gateway | vehicle
    slot: int | None
    grade: str
    limits_crossed: str      # comma-separated ids of health.grading.LIMITS
    capacity_ah: float | None
    capacity_sigma_ah: float | None
    capacity_estimates: int
    nominal_capacity_ah: float | None
    soh_pct: float | None
    soh_sigma_pct: float | None
    soh_bms_pct: float | None
    soh_disagrees: bool | None
    resistance_mohm: float | None
    resistance_sigma_mohm: float | None
    resistance_steps: int
    fade_pct_per_100_cycles: float | None
    cycles: float | None
    equivalent_cycles: float
    cycles_to_90: float | None
    cycles_to_80: float | None
    cycles_to_70: float | None
    self_discharge_pct_per_day: float | None
    retention_pct: float | None
    recovery_pct: float | None
    energy_in_kwh: float
    energy_out_kwh: float
    efficiency_pct: float | None
    charge_sessions: int
    last_seen_ns: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


COLUMNS: tuple[str, ...] = tuple(HealthRecord.__dataclass_fields__)


def assess(e: BatteryEstimate) -> HealthRecord:
    """Grade an estimate (health.grading) and flatten it into a report row."""
    retention = retention_pct(e.self_discharge_pct_per_day)
    g = grade(soh_pct=e.soh_pct, fade_pct_per_100_cycles=e.fade_pct_per_100_cycles, retention_pct=retention,
              recovery_pct=e.recovery_pct)
    place = e.place
    return HealthRecord(
        battery_id=e.battery_id, site=place.site if place else "", place=place.device if place else "",
        place_kind=place.kind if place else "", slot=place.slot if place else None, grade=g.grade,
        limits_crossed=",".join(g.crossed), capacity_ah=e.capacity_ah, capacity_sigma_ah=e.capacity_sigma_ah,
        capacity_estimates=e.capacity_estimates, nominal_capacity_ah=e.nominal_capacity_ah, soh_pct=e.soh_pct,
        soh_sigma_pct=e.soh_sigma_pct, soh_bms_pct=e.soh_bms_pct,
        soh_disagrees=bms_disagrees(e.soh_pct, e.soh_sigma_pct, e.soh_bms_pct), resistance_mohm=e.resistance_mohm,
        resistance_sigma_mohm=e.resistance_sigma_mohm, resistance_steps=e.resistance_steps,
        fade_pct_per_100_cycles=e.fade_pct_per_100_cycles, cycles=e.cycles, equivalent_cycles=e.equivalent_cycles,
        cycles_to_90=g.cycles_to_90, cycles_to_80=g.cycles_to_80, cycles_to_70=g.cycles_to_70,
        self_discharge_pct_per_day=e.self_discharge_pct_per_day, retention_pct=retention,
        recovery_pct=e.recovery_pct, energy_in_kwh=e.energy_in_wh / 1000.0, energy_out_kwh=e.energy_out_wh / 1000.0,
        efficiency_pct=e.efficiency_pct, charge_sessions=e.charge_sessions, last_seen_ns=e.last_seen_ns)


_NOT_FIELDS = {"site", "place_kind"}  # stored as the tags site and kind
_GRADE_CODES = {"keep": 0, "restrict": 1, "retire": 2, "unknown": -1}


def health_fields(record: HealthRecord) -> dict[str, float | int | bool | str | None]:
    """Fields of a ``battery_health`` point (docs/schema.md): every measured value, ``None`` skipped."""
    row = record.as_dict()
    fields: dict[str, float | int | bool | str | None] = {k: v for k, v in row.items() if k not in _NOT_FIELDS}
    fields["grade_code"] = _GRADE_CODES[record.grade]
    return fields


def session_fields(s: ChargeSession) -> dict[str, float | int | bool | str | None]:
    """Fields of a ``charge_session`` point (docs/schema.md)."""
    return {"battery_id": s.battery_id, "duration_s": round(s.duration_s, 1), "charge_ah": round(s.charge_ah, 4),
            "energy_in_wh": round(s.energy_in_wh, 2), "soc_start_pct": s.soc_start_pct, "soc_end_pct": s.soc_end_pct,
            "voltage_start_v": s.voltage_start_v, "voltage_end_v": s.voltage_end_v,
            "current_max_a": round(s.current_max_a, 2), "temperature_start_c": s.temperature_start_c,
            "temperature_min_c": s.temperature_min_c, "temperature_max_c": s.temperature_max_c, "cycles": s.cycles,
            "reason": s.reason, "capacity_ah": None if s.capacity_ah is None else round(s.capacity_ah, 4),
            "capacity_sigma_ah": None if s.capacity_sigma_ah is None else round(s.capacity_sigma_ah, 4),
            "end_ns": s.end_ns}


def write_report(records: Iterable[HealthRecord | Mapping[str, Any]], fmt: str, out: IO[str]) -> int:
    """Write the grading report as ``csv`` or ``json``; returns the rows written."""
    rows = [r.as_dict() if isinstance(r, HealthRecord) else dict(r) for r in records]
    if fmt == "json":
        limits = [{"id": lim.id, "value": lim.value, "threshold": lim.threshold, "clause": lim.clause,
                   "grade": lim.grade, "below": lim.below} for lim in LIMITS]
        json.dump({"limits": limits, "batteries": rows}, out, indent=2, ensure_ascii=False, sort_keys=True)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    else:
        raise ValueError(f"unknown report format {fmt!r}; use csv or json")
    return len(rows)


def read_report_rows(points: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Report rows from stored ``battery_health`` points (the newest per battery), for ``cascade health
    report`` without re-analysing."""
    newest: dict[str, Mapping[str, Any]] = {}
    for p in points:
        bid = str(p.get("battery_id") or p.get("battery") or "")
        if bid and (bid not in newest or p.get("time", 0) >= newest[bid].get("time", 0)):
            newest[bid] = p
    rows = []
    for bid, p in sorted(newest.items()):
        row = {k: p.get(k) for k in COLUMNS}
        row["battery_id"] = bid
        # Stored as the tag ``kind`` (health.runner.health_line); ``place_kind`` is the report's name for it.
        row["place_kind"] = p.get("place_kind") or p.get("kind") or None
        # The pack's own last reading; rows stored before that field existed fall back to the analysis
        # time (the point's timestamp: the end of the analysed range, the same for every pack).
        row["last_seen_ns"] = p.get("last_seen_ns") or p.get("time")
        rows.append(row)
    return rows
