"""Cell chemistries and their electrical limits: the one table the rules and the model use.

Values are per cell, typical of the cell makers' datasheets for each chemistry (see
docs/warnings.md, "Chemistry-aware electrical limits", for sources and which numbers are
assumptions). A pack's nominal voltage is ``cells × nominal_v`` when the pack does not report it.

    >>> CELLS[Chemistry.LFP].nominal_v, CELLS[Chemistry.LFP].charge_v
    (3.2, 3.65)
    >>> nominal_pack_voltage(Chemistry.NMC, 13)
    46.8
"""

from __future__ import annotations

from dataclasses import dataclass

from core.model import Chemistry

__all__ = ["CELLS", "CellLimits", "nominal_pack_voltage"]


@dataclass(frozen=True, slots=True)
class CellLimits:
    """One cell of a chemistry: nominal, end-of-charge and discharge cut-off voltage (V)."""

    nominal_v: float
    charge_v: float
    cutoff_v: float


CELLS: dict[Chemistry, CellLimits] = {
    Chemistry.LFP: CellLimits(3.2, 3.65, 2.5),
    Chemistry.NMC: CellLimits(3.6, 4.2, 3.0),
    Chemistry.LMO: CellLimits(3.7, 4.2, 3.0),
    Chemistry.LTO: CellLimits(2.3, 2.7, 1.5),
    Chemistry.NA_ION: CellLimits(3.1, 3.95, 1.5),
}
"""Per-chemistry cell limits. ``Chemistry.UNKNOWN`` has none: nothing is guessed."""


def nominal_pack_voltage(chemistry: int | None, cells: int | None) -> float | None:
    """``cells × nominal`` for a known chemistry and a plausible cell count (1-64), else ``None``."""
    if chemistry is None or cells is None or not 1 <= cells <= 64:
        return None
    try:
        limits = CELLS.get(Chemistry(chemistry))
    except ValueError:
        return None
    return None if limits is None else round(cells * limits.nominal_v, 3)
