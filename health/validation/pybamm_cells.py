"""Make the public-physics validation data: PyBaMM (an independent battery model, BSD-3-Clause) cells of
known, fading capacity, cycled the way a swap pack is used, reduced to the stream a BMS would report.

    make health-validate     # = python -m health.validation.pybamm_cells in a venv with
                             #   health/validation/requirements.txt, then tests/test_health_validation.py

The cell is PyBaMM's Chen2020 parameter set (LG M50: NMC811 / graphite-SiOx, 5 Ah, published by Chen et
al., J. Electrochem. Soc. 167 080534, 2020), solved with the Doyle-Fuller-Newman model. Fade is loss of
lithium inventory and of active material, the two main ageing modes; the **true capacity** of each
aged cell is what PyBaMM's own C/20 discharge from full delivers (4.2 V CC-CV to 2.5 V). The service
profile: CC-CV charge, rest, rides at 1 C and 0.5 C with rests between, a partial recharge, rest, a
full charge; reported every 10 s. Output: ``tests/health_cases/pybamm/<case>.csv.gz`` (time s, voltage V,
current A with + = charging, temperature °C) and ``truth.json``. Nothing of Cascade's is used to make it.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pybamm

# The SOC points of health.ocv.SOC_POINTS (this script runs in its own venv, without Cascade).
SOC_POINTS = (0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0)

OUT = Path(__file__).resolve().parents[2] / "tests" / "health_cases" / "pybamm"
# (case, fraction of negative-electrode lithium kept, fraction of positive active material kept)
CASES = [("fresh", 1.00, 1.00), ("lli10", 0.90, 1.00), ("lam30", 1.00, 0.70), ("aged25", 0.82, 0.90)]
PERIOD = "10 seconds"


def _params(lithium: float, active: float) -> pybamm.ParameterValues:
    p = pybamm.ParameterValues("Chen2020")
    p["Initial concentration in negative electrode [mol.m-3]"] *= lithium
    p["Positive electrode active material volume fraction"] *= active
    return p


def _true_capacity(params: pybamm.ParameterValues) -> tuple[float, Any, Any]:
    exp = pybamm.Experiment([("Discharge at C/5 until 3.0 V", "Rest for 1 hour", "Charge at C/5 until 4.2 V",
                              "Hold at 4.2 V until C/100", "Rest for 2 hours", "Discharge at C/20 until 2.5 V")])
    sol = pybamm.Simulation(pybamm.lithium_ion.DFN(), parameter_values=params, experiment=exp).solve(
        initial_soc=0.5)
    step = sol.cycles[-1].steps[-1]
    q, v = step["Discharge capacity [A.h]"].entries, step["Voltage [V]"].entries
    return float(abs(q[-1] - q[0])), q - q[0], v


def _ocv_table(discharged_ah, volts, capacity: float) -> list[float]:
    """The cell's pseudo-OCV at SOC_POINTS from its C/20 discharge, as a cell maker's datasheet gives it."""
    import numpy as np

    soc = 100.0 * (1.0 - discharged_ah / capacity)
    order = np.argsort(soc)
    return [round(float(np.interp(x, soc[order], volts[order])), 4) for x in SOC_POINTS]


def _service(params: pybamm.ParameterValues) -> pybamm.Solution:
    exp = pybamm.Experiment([
        "Charge at 0.5 C until 4.2 V", "Hold at 4.2 V until C/20", "Rest for 1 hour",
        "Discharge at 1 C for 15 minutes", "Rest for 10 minutes", "Discharge at 0.5 C for 30 minutes",
        "Rest for 10 minutes", "Discharge at 1 C for 12 minutes", "Rest for 1 hour",
        "Charge at 0.5 C for 40 minutes", "Rest for 1 hour",
        "Discharge at 0.7 C for 35 minutes", "Rest for 1 hour",
        "Charge at 0.5 C until 4.2 V", "Hold at 4.2 V until C/20", "Rest for 30 minutes",
    ], period=PERIOD)
    return pybamm.Simulation(pybamm.lithium_ion.DFN(), parameter_values=params, experiment=exp).solve(
        initial_soc=0.35)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    truth = {"source": "PyBaMM " + pybamm.__version__ + ", Chen2020 (LG M50), DFN; true capacity by C/20",
             "cells": {}}
    for case, lithium, active in CASES:
        params = _params(lithium, active)
        capacity, discharged, volts = _true_capacity(params)
        if case == "fresh":
            truth["ocv_table_v"] = _ocv_table(discharged, volts, capacity)
        sol = _service(params)
        t = sol["Time [s]"].entries
        v = sol["Terminal voltage [V]"].entries if "Terminal voltage [V]" in sol.all_models[0].variables \
            else sol["Voltage [V]"].entries
        i = sol["Current [A]"].entries
        temp = sol["X-averaged cell temperature [C]"].entries
        lines = ["time_s,voltage_v,current_a,temperature_c"]
        last = -1.0
        for k in range(len(t)):
            if t[k] - last < 9.999:  # one row per report period (the solver adds step boundaries)
                continue
            last = t[k]
            lines.append(f"{t[k]:.0f},{v[k]:.4f},{-i[k]:.3f},{temp[k]:.2f}")
        with gzip.open(OUT / f"{case}.csv.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        truth["cells"][case] = {"capacity_ah": round(capacity, 4), "nominal_ah": 5.0, "lithium_kept": lithium,
                                "positive_active_material_kept": active}
        print(f"{case}: true capacity {capacity:.4f} Ah, {len(lines) - 1} rows", flush=True)
    (OUT / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
