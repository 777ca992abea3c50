"""Open-circuit voltage of one cell against state of charge, per chemistry: the table that turns a
rested pack's voltage into an SOC anchor independent of the BMS's own coulomb counting.

The curves are typical of the published OCV-SOC measurements of each chemistry (graphite anodes; NMC
after Plett, *Battery Management Systems* vol. 1, and LFP after its characteristic 3.3 V plateau). They
are assumptions in the sense of docs/battery-health.md: the uncertainty an anchor carries is derived
from the curve's slope, so on the LFP plateau, where millivolts mean tens of percent, no anchor is
taken at all.

    >>> round(soc_from_ocv(Chemistry.NMC, 3.76), 1)
    50.0
    >>> round(ocv(Chemistry.LFP, 100.0), 2)
    3.45
"""

from __future__ import annotations

import bisect
from typing import Final

from core.chemistry import CELLS
from core.model import Chemistry

__all__ = ["OCV_CURVES", "SOC_POINTS", "cells_in_series", "ocv", "ocv_slope", "soc_from_ocv"]

SOC_POINTS: Final = (0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0)
#: Cell OCV (V) at the SOC points above, per chemistry; strictly increasing.
OCV_CURVES: Final[dict[Chemistry, tuple[float, ...]]] = {
    Chemistry.NMC: (3.00, 3.45, 3.55, 3.62, 3.66, 3.71, 3.76, 3.83, 3.91, 3.99, 4.08, 4.13, 4.18),
    Chemistry.LMO: (3.00, 3.48, 3.58, 3.66, 3.72, 3.78, 3.84, 3.90, 3.95, 4.01, 4.08, 4.12, 4.17),
    Chemistry.LFP: (2.80, 3.05, 3.18, 3.24, 3.27, 3.285, 3.295, 3.305, 3.315, 3.325, 3.34, 3.36, 3.45),
}


def _curve(chemistry: int | None, curve: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
    if curve is not None:
        return curve
    try:
        return OCV_CURVES.get(Chemistry(chemistry)) if chemistry is not None else None
    except ValueError:
        return None


def ocv(chemistry: int, soc_pct: float) -> float:
    """Cell OCV (V) at ``soc_pct`` (clamped to 0-100). KeyError for a chemistry without a curve."""
    volts = OCV_CURVES[Chemistry(chemistry)]
    soc = min(100.0, max(0.0, soc_pct))
    i = min(len(SOC_POINTS) - 2, bisect.bisect_right(SOC_POINTS, soc) - 1)
    frac = (soc - SOC_POINTS[i]) / (SOC_POINTS[i + 1] - SOC_POINTS[i])
    return volts[i] + frac * (volts[i + 1] - volts[i])


def soc_from_ocv(chemistry: int | None, cell_v: float, curve: tuple[float, ...] | None = None) -> float | None:
    """SOC (%) of a rested cell at ``cell_v``; ``None`` without a curve or outside it. ``curve``: the
    cell's own OCV at :data:`SOC_POINTS` (a cell maker's table) instead of the chemistry's typical one."""
    volts = _curve(chemistry, curve)
    if volts is None or not volts[0] <= cell_v <= volts[-1]:
        return None
    i = min(len(volts) - 2, bisect.bisect_right(volts, cell_v) - 1)
    return SOC_POINTS[i] + (cell_v - volts[i]) / (volts[i + 1] - volts[i]) * (SOC_POINTS[i + 1] - SOC_POINTS[i])


def ocv_slope(chemistry: int | None, soc_pct: float, curve: tuple[float, ...] | None = None) -> float | None:
    """dOCV/dSOC (V per %) of one cell around ``soc_pct``; ``None`` without a curve."""
    volts = _curve(chemistry, curve)
    if volts is None:
        return None
    soc = min(100.0, max(0.0, soc_pct))
    i = min(len(SOC_POINTS) - 2, bisect.bisect_right(SOC_POINTS, soc) - 1)
    return (volts[i + 1] - volts[i]) / (SOC_POINTS[i + 1] - SOC_POINTS[i])


def cells_in_series(chemistry: int | None, cell_count: int | None, nominal_voltage_v: float | None) -> int | None:
    """Cells in series: the BMS's count, else the nominal pack voltage over the chemistry's nominal cell
    voltage (a whole number within 3 %), else ``None`` (nothing is guessed)."""
    if cell_count and 1 <= cell_count <= 64:
        return cell_count
    try:
        limits = CELLS.get(Chemistry(chemistry)) if chemistry is not None else None
    except ValueError:
        limits = None
    if limits is None or not nominal_voltage_v:
        return None
    n = round(nominal_voltage_v / limits.nominal_v)
    return n if 1 <= n <= 64 and abs(n * limits.nominal_v - nominal_voltage_v) <= 0.03 * nominal_voltage_v else None
