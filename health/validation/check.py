"""Run the estimators over the shipped PyBaMM validation cells (``tests/health_cases/pybamm``) and report
each cell's capacity error against PyBaMM's own C/20 capacity.

    python -m health.validation.check        # prints the table of docs/battery-health.md, "Validation"
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from core.model import BatteryState, Chemistry, SlotReading
from health.analyser import BatteryAnalyser, BatteryEstimate, Place, Settings

__all__ = ["CASES_DIR", "CellResult", "check_cell", "check_all", "main"]

CASES_DIR = Path(__file__).resolve().parents[2] / "tests" / "health_cases" / "pybamm"
_PLACE = Place("lab", "pybamm", 1)
# One cell: the voltage of a BMS cell channel (1 mV), its current sensor as a pack's.
SETTINGS = Settings(voltage_resolution_v=0.001)


@dataclass(frozen=True, slots=True)
class CellResult:
    case: str
    true_capacity_ah: float
    estimate: BatteryEstimate

    @property
    def error_pct(self) -> float | None:
        c = self.estimate.capacity_ah
        return None if c is None else (c - self.true_capacity_ah) / self.true_capacity_ah * 100.0


def check_cell(case: str, true_capacity_ah: float, nominal_ah: float, settings: Settings = SETTINGS,
               start_s: float = 1.7e9) -> CellResult:
    analyser = BatteryAnalyser(f"pybamm-{case}", settings)
    with gzip.open(CASES_DIR / f"{case}.csv.gz", "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            amps = float(row["current_a"])
            state = BatteryState.CHARGING if amps > 0.05 else BatteryState.DISCHARGING if amps < -0.05 \
                else BatteryState.IDLE
            pack = SlotReading(slot=1, battery_id=f"pybamm-{case}", chemistry=Chemistry.NMC, cell_count=1,
                               nominal_capacity_ah=nominal_ah, voltage_v=float(row["voltage_v"]),
                               charge_current_a=amps, temperature_c=float(row["temperature_c"]), battery_state=state)
            analyser.feed(int((start_s + float(row["time_s"])) * 1e9), pack, _PLACE)
    analyser.finish()
    return CellResult(case, true_capacity_ah, analyser.estimate())


def check_all(own_ocv: bool) -> list[CellResult]:
    """Every shipped cell, with the chemistry's typical NMC OCV table or (``own_ocv``) the cell's own."""
    truth = json.loads((CASES_DIR / "truth.json").read_text(encoding="utf-8"))
    settings = replace(SETTINGS, ocv_curve=tuple(truth["ocv_table_v"])) if own_ocv else SETTINGS
    return [check_cell(case, cell["capacity_ah"], cell["nominal_ah"], settings)
            for case, cell in sorted(truth["cells"].items())]


def main() -> int:
    print("| cell | true capacity (PyBaMM C/20) | OCV table | estimated | error | stated σ | estimates |")
    print("|---|---|---|---|---|---|---|")
    for own in (True, False):
        for r in check_all(own):
            e = r.estimate
            table = "the cell's own" if own else "typical NMC"
            if e.capacity_ah is None or e.capacity_sigma_ah is None or r.error_pct is None:
                print(f"| {r.case} | {r.true_capacity_ah:.3f} Ah | {table} | none | | | 0 |")
                continue
            print(f"| {r.case} | {r.true_capacity_ah:.3f} Ah | {table} | {e.capacity_ah:.3f} Ah | {r.error_pct:+.1f} % | "
                  f"{e.capacity_sigma_ah / e.capacity_ah * 100:.1f} % | {e.capacity_estimates} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
