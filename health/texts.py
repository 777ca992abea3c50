"""Grading alert texts in the operators' language (Simplified Chinese by default, English by option),
through the one message catalogue (``locale/``, ``python -m alerting.catalogue_i18n --write``).

    >>> texts = HealthTexts("en")
    >>> texts.limit("soh_below_restrict")
    'SOH below 80 % (P-5.1.1.4)'
"""

from __future__ import annotations

from typing import Any

from alerting.i18n import N_
from core.i18n import DEFAULT_LANGUAGE, fill, normalize_language, translations
from health.grading import LIMITS
from health.report import HealthRecord

__all__ = ["HealthTexts"]

_LIMITS = {limit.id: limit for limit in LIMITS}
_GRADES = {"keep": N_("keep in service"), "restrict": N_("restrict"), "retire": N_("retire"),
           "unknown": N_("not graded")}
#: How a charge session ended (health.analyser.ChargeSession.reason).
_ENDINGS = {"full": N_("charged full"), "stopped": N_("charging stopped"), "protection": N_("protection cut-off"),
            "removed": N_("pack removed"), "gap": N_("data gap"), "open": N_("still charging")}


class HealthTexts:
    """The grading alert's name, summary, diagnosis and action in one language."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = normalize_language(language)
        self._catalog = translations(self.language)

    def tr(self, msgid: str, /, **values: Any) -> str:
        return fill(self._catalog.gettext(msgid), msgid, values)

    def limit(self, limit_id: str) -> str:
        lim = _LIMITS[limit_id]
        values = {"threshold": lim.threshold, "clause": lim.clause}
        texts = {
            "soh_below_retire": self.tr("SOH below {threshold:g} % ({clause})", **values),
            "soh_below_restrict": self.tr("SOH below {threshold:g} % ({clause})", **values),
            "retention_below": self.tr("charge retention below {threshold:g} % ({clause})", **values),
            "recovery_below": self.tr("capacity recovery below {threshold:g} % ({clause})", **values),
            "fade_fast": self.tr("fading faster than {threshold:g} % per 100 cycles ({clause})", **values),
            "end_near": self.tr("fewer than {threshold:g} cycles left to 70 % ({clause})", **values),
        }
        return texts[limit_id]

    def grade(self, grade: str) -> str:
        return self.tr(_GRADES[grade]) if grade in _GRADES else grade

    def grade_label(self, grade: str) -> str:
        """The grade as people say it with its code (``keep``, as in the report and the API) beside it."""
        return self._labelled(_GRADES.get(grade), grade)

    def ending(self, reason: str) -> str:
        """How a charge session ended, with its code (``full``, as stored) beside it."""
        return self._labelled(_ENDINGS.get(reason), reason)

    def _labelled(self, msgid: str | None, code: str) -> str:
        name = self.tr(msgid) if msgid is not None else code
        return name if name == code else self.tr("{name} ({code})", name=name, code=code)

    def where(self, r: HealthRecord) -> str:
        if r.place_kind == "vehicle":
            return self.tr("{site}/vehicle {vehicle}", site=r.site, vehicle=r.place)
        if r.place_kind == "gateway":
            return self.tr("{site}/BLE gateway {gateway} slot {slot}", site=r.site, gateway=r.place,
                           slot="-" if r.slot is None else r.slot)
        if r.slot is not None:
            return self.tr("{site}/{cabinet} slot {slot}", site=r.site, cabinet=r.place, slot=r.slot)
        return f"{r.site}/{r.place}"

    def annotations(self, r: HealthRecord) -> dict[str, str]:
        # The limits that give the grade (SOH below 70 % says it all; below 80 % too is noise on a page).
        limits = self.tr(", ").join(self.limit(x) for x in r.limits_crossed.split(",")
                                   if x and _LIMITS[x].grade == r.grade)
        # The notifier adds the battery id to the headline; the place is said once, at the end.
        summary = self.tr("L1 Battery grade {grade}: {limits} at {where}", grade=self.grade(r.grade),
                          limits=limits, where=self.where(r))
        unknown = self.tr("unknown")

        def pct(value: float | None, spec: str = ".0f") -> str:
            return unknown if value is None else f"{value:{spec}} %"
        diagnosis = self.tr(
            "Measured capacity {capacity} (SOH {soh}, its BMS says {bms}); fade per 100 cycles {fade}; "
            "charge retention {retention}; capacity recovery {recovery}; {cycles} cycles left to 70 %.",
            capacity=unknown if r.capacity_ah is None else f"{r.capacity_ah:.1f} ± {r.capacity_sigma_ah or 0:.1f} Ah",
            soh=pct(r.soh_pct), bms=pct(r.soh_bms_pct), fade=pct(r.fade_pct_per_100_cycles, ".1f"),
            retention=pct(r.retention_pct), recovery=pct(r.recovery_pct),
            cycles=unknown if r.cycles_to_70 is None else f"{r.cycles_to_70:.0f}")
        if r.grade == "retire":
            action = self.tr("Take battery {battery} out of service at its next swap and send it for re-testing "
                             "or recycling.", battery=r.battery_id)
        else:
            action = self.tr("Restrict battery {battery} to light duty (short routes, low power) and re-test its "
                             "capacity.", battery=r.battery_id)
        return {"summary": summary, "diagnosis": diagnosis, "action": action}
