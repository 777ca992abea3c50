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

from core.model import BatteryState, Chemistry, SlotReading

__all__ = ["CELLS", "DISCHARGE_PROTECTION_48V", "CellLimits", "chemistry_contradiction_v",
           "discharge_protection_voltage", "nominal_pack_voltage"]


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


DISCHARGE_PROTECTION_48V: dict[Chemistry, float] = {
    Chemistry.LFP: 38.4, Chemistry.NMC: 38.4, Chemistry.LMO: 38.4, Chemistry.LTO: 38.4,  # 锂离子电池组
    Chemistry.NA_ION: 30.0,  # 钠离子电池组
}
"""V-5.10 Table 2: discharge protection voltage of a 48 V-class pack by chemistry (typical values)."""
_VOLTAGE_CLASSES = (24.0, 36.0, 48.0, 60.0, 72.0)


def discharge_protection_voltage(chemistry: int | None, nominal_v: float | None) -> float | None:
    """The pack voltage below which the vehicle must not discharge it (V-5.10): the standard's value for
    a 48 V-class pack (38.4 V Li-ion, 30 V Na-ion), scaled by voltage class for 24/36/60/72 V packs
    (Cascade's extrapolation; the class is the one nearest the pack's nominal voltage). ``None`` when the
    chemistry or the nominal voltage is unknown: nothing is guessed."""
    if chemistry is None or not nominal_v:
        return None
    try:
        base = DISCHARGE_PROTECTION_48V.get(Chemistry(chemistry))
    except ValueError:
        return None
    if base is None:
        return None
    voltage_class = min(_VOLTAGE_CLASSES, key=lambda c: abs(c - nominal_v))
    return round(base * voltage_class / 48.0, 2)


def chemistry_contradiction_v(pack: SlotReading) -> float | None:
    """Volts per cell by which a pack contradicts its declared chemistry, the larger of: its declared
    nominal voltage per cell away from the chemistry's nominal (a 46.8 V 13-cell pack is not sodium-ion),
    and, while it discharges, its highest cell above the chemistry's end-of-charge voltage (an "LFP" pack
    delivering current at 4.0 V per cell is a nickel-based one). ``None`` when nothing can be compared."""
    if pack.chemistry is None:
        return None
    try:
        limits = CELLS.get(Chemistry(pack.chemistry))
    except ValueError:
        return None
    if limits is None:
        return None
    found: list[float] = []
    cells = pack.cell_count
    if pack.nominal_voltage_v and cells and 1 <= cells <= 64:
        found.append(abs(pack.nominal_voltage_v / cells - limits.nominal_v))
    current = pack.charge_current_a
    discharging = current <= -1.0 if current is not None else pack.battery_state == BatteryState.DISCHARGING
    if discharging:
        high = pack.cell_voltage_max_v
        if high is None and pack.voltage_v is not None and cells and 1 <= cells <= 64:
            high = pack.voltage_v / cells
        if high is not None:
            found.append(high - limits.charge_v)
    return max(found) if found else None
