"""Second-life grading of one pack against the acceptance and cycle-life clauses (docs/battery-health.md).

| limit | value | clause | grade when crossed |
|---|---|---|---|
| ``soh_below_retire`` | SOH < 70 % | D-4.2 (≥ 70 % after 800 cycles) | retire |
| ``retention_below`` | charge retention < 85 % (28-day storage, from the measured self-discharge) | P-5.1.1.3 | retire |
| ``recovery_below`` | capacity recovery < 90 % (capacity after a storage ÷ before it) | P-5.1.1.3 | retire |
| ``soh_below_restrict`` | SOH < 80 % | P-5.1.1.4 (> 800 cycles to 80 %) | restrict |
| ``fade_fast`` | fade > 2.5 % per 100 cycles | P-5.1.1.4 (> 400 cycles to 90 %: ≤ 10 points per 400) | restrict |
| ``end_near`` | fewer than 100 projected cycles to 70 % | D-4.2 | restrict |

    >>> grade(soh_pct=78.0, fade_pct_per_100_cycles=1.0, retention_pct=None, recovery_pct=None).grade
    'restrict'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["GRADES", "LIMITS", "Grade", "Limit", "cycles_to", "grade", "retention_pct"]

#: Grades, best first; ``unknown``: no capacity measured yet (nothing is assumed).
GRADES: Final = ("keep", "restrict", "retire", "unknown")


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit: the value it tests, its threshold, the clause it comes from and the grade it gives."""

    id: str
    value: str
    threshold: float
    clause: str
    grade: str
    below: bool = True


LIMITS: Final[tuple[Limit, ...]] = (
    Limit("soh_below_retire", "soh_pct", 70.0, "D-4.2", "retire"),
    Limit("retention_below", "retention_pct", 85.0, "P-5.1.1.3", "retire"),
    Limit("recovery_below", "recovery_pct", 90.0, "P-5.1.1.3", "retire"),
    Limit("soh_below_restrict", "soh_pct", 80.0, "P-5.1.1.4", "restrict"),
    Limit("fade_fast", "fade_pct_per_100_cycles", 2.5, "P-5.1.1.4", "restrict", below=False),
    Limit("end_near", "cycles_to_70", 100.0, "D-4.2", "restrict"),
)
#: Storage time of the charge-retention test the measured self-discharge is projected to (days).
RETENTION_DAYS: Final = 28.0
#: |measured SOH − BMS SOH| above this (percentage points, or 2 σ if larger) is flagged.
BMS_DISAGREE_PCT: Final = 5.0


@dataclass(frozen=True, slots=True)
class Grade:
    """A pack's grade, the limits it crosses (ids of :data:`LIMITS`) and its projections."""

    grade: str
    crossed: tuple[str, ...]
    cycles_to_90: float | None
    cycles_to_80: float | None
    cycles_to_70: float | None
    retention_pct: float | None
    recovery_pct: float | None


def cycles_to(soh_pct: float | None, fade_pct_per_100_cycles: float | None, level: float) -> float | None:
    """Cycles from now until SOH reaches ``level`` at the measured fade rate (0 when already there;
    ``None`` when SOH or a positive fade rate is unknown)."""
    if soh_pct is None:
        return None
    if soh_pct <= level:
        return 0.0
    if fade_pct_per_100_cycles is None or fade_pct_per_100_cycles <= 0:
        return None
    return (soh_pct - level) / fade_pct_per_100_cycles * 100.0


def retention_pct(self_discharge_pct_per_day: float | None) -> float | None:
    """Charge left after the standard's 28-day storage at the measured self-discharge rate (%)."""
    if self_discharge_pct_per_day is None:
        return None
    return max(0.0, 100.0 - RETENTION_DAYS * max(0.0, self_discharge_pct_per_day))


def grade(*, soh_pct: float | None, fade_pct_per_100_cycles: float | None, retention_pct: float | None,
          recovery_pct: float | None) -> Grade:
    """Grade one pack from its measured values (``None`` = not measured: that limit is not tested)."""
    projections = {level: cycles_to(soh_pct, fade_pct_per_100_cycles, level) for level in (90.0, 80.0, 70.0)}
    values = {"soh_pct": soh_pct, "fade_pct_per_100_cycles": fade_pct_per_100_cycles,
              "retention_pct": retention_pct, "recovery_pct": recovery_pct, "cycles_to_70": projections[70.0]}
    crossed = []
    for limit in LIMITS:
        value = values[limit.value]
        if value is not None and (value < limit.threshold if limit.below else value > limit.threshold):
            crossed.append(limit)
    if soh_pct is None:
        result = "unknown" if not crossed else max((c.grade for c in crossed), key=GRADES.index)
    else:
        result = max((c.grade for c in crossed), key=GRADES.index, default="keep")
    return Grade(result, tuple(c.id for c in crossed), projections[90.0], projections[80.0], projections[70.0],
                 retention_pct, recovery_pct)


def bms_disagrees(soh_pct: float | None, soh_sigma_pct: float | None, soh_bms_pct: float | None) -> bool | None:
    """The BMS's own SOH differs from the measured one by more than 5 points (or 2 σ): ``None`` when
    either is missing."""
    if soh_pct is None or soh_bms_pct is None:
        return None
    return abs(soh_pct - soh_bms_pct) > max(BMS_DISAGREE_PCT, 2 * (soh_sigma_pct or 0.0))
