"""The typed requests and answers of the third-party API (``/api/v1``): pydantic models, from which the
handlers validate what comes in and the OpenAPI document (:mod:`alerting.apiv1.openapi`) is generated.

Every string has a bounded length (a request cannot grow state or logs without bound, and a client knows
what to expect); request bodies and query strings refuse unknown keys; times are RFC 3339 with a zone
(answers in UTC, ``Z``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

__all__ = [
    "MAX_LIMIT", "AlarmCount", "AlarmStats", "AlarmStatsQuery", "Alert", "AlertAck", "AlertPage", "AlertsQuery",
    "AuditEntry", "AuditPage", "CommandEntry", "CommandPage", "Delivery", "DeliveryPage", "ErrorBody", "FusionTerm",
    "HealthPack", "HealthPackPage", "HealthPackPath", "HealthPacksQuery", "LevelCondition", "LogQuery", "Reading",
    "ReadingPage", "ReadingsQuery", "RuleThresholds", "ThresholdChange",
    "ThresholdList", "ThresholdPath", "TriggerCondition", "TriggerList", "WarningSignal", "WarningSignalAlert",
]

MAX_LIMIT = 1000
"""Items per page at most."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
"""A site, cabinet, battery or rule id: what InfluxDB tags and the catalogue use."""
Name = Annotated[str, StringConstraints(max_length=64)]
Short = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")]
Level = Annotated[int, Field(ge=1, le=3)]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    """Only RFC 3339 date-times with a zone (what ``format: date-time`` says): not epoch numbers, not a
    date alone, not a time without its zone."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("write an RFC 3339 time with its zone, e.g. 2026-12-06T08:00:00Z")
    return value


def _utc_in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"time must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value.astimezone(UTC)


Time = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_utc_in_range)]


class _In(BaseModel):
    """A request part: unknown keys and loose types are refused."""

    model_config = ConfigDict(extra="forbid", strict=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests --------------------------------------------------------------------------------------


class PageQuery(_In):
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description=f"items per page, 1..{MAX_LIMIT}")
    cursor: Cursor | None = Field(default=None, description="the next_cursor of the previous page; leave out for "
                                                            "the first page")


class ReadingsQuery(PageQuery):
    """Slot readings (measurement ``slot``, docs/schema.md) oldest first."""

    site: Id | None = Field(default=None, description="site id, e.g. site-01")
    cabinet: Id | None = Field(default=None, description="cabinet id, e.g. C0003")
    slot: int | None = Field(default=None, ge=1, le=256, description="slot number (with cabinet)")
    battery: Id | None = Field(default=None, description="battery id, wherever it was charged, e.g. B000123")
    since: Time | None = Field(default=None, description="from this time (default: an hour before until)")
    until: Time | None = Field(default=None, description="up to this time (default: now)")


class AlertsQuery(PageQuery):
    """Active alerts (warning signals), worst first."""

    level: Level | None = Field(default=None, description="only this level")
    site: Id | None = None
    cabinet: Id | None = None


class AlarmStatsQuery(_In):
    since: Time | None = Field(default=None, description="from this time (default: 24 hours before until)")
    until: Time | None = Field(default=None, description="up to this time (default: now)")


class LogQuery(PageQuery):
    """An audit log, oldest first."""


Grade = Literal["keep", "restrict", "retire", "unknown"]


class HealthPacksQuery(PageQuery):
    """The newest health analysis of each pack, by battery id."""

    site: Id | None = Field(default=None, description="where the pack was last seen: site (or fleet) id")
    cabinet: Id | None = Field(default=None, description="where the pack was last seen: cabinet (or vehicle) id")
    battery: Id | None = Field(default=None, description="one battery id, e.g. B000123")
    grade: Grade | None = Field(default=None, description="only packs of this grade")


class HealthPackPath(_In):
    battery: Id = Field(description="a battery id", examples=["B000123"])


class ThresholdPath(_In):
    rule: Id = Field(description="a rule id of GET /api/v1/rules", examples=["pack_overvoltage"])
    level: Level = Field(examples=[2])


class ThresholdChange(_In):
    """A new base threshold for one rule and level (engineer, admin; audited)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: float = Field(allow_inf_nan=False, ge=-1e9, le=1e9, description="the new threshold in the rule's unit",
                         examples=[1.24])
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")] = Field(
        description="why (kept in the audit)")
    who: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"\S")] | None = Field(
        default=None, description="who changes it; ignored with a personal token (its subject is recorded)")


# --- answers --------------------------------------------------------------------------------------


class ErrorBody(_Out):
    """Every refusal and error: a message in the caller's language (Accept-Language zh or en), a stable
    code and an English detail saying what to send instead."""

    error: Text
    code: Name
    detail: Text


class Reading(_Out):
    time: datetime
    site: Name
    cabinet: Name
    slot: int
    battery_id: Name | None = None
    soc_pct: float | None = None
    soh_pct: float | None = None
    voltage_v: float | None = None
    charge_current_a: float | None = None
    temperature_c: float | None = None
    cell_voltage_max_v: float | None = None
    cell_voltage_min_v: float | None = None
    cell_temperature_max_c: float | None = None
    cell_temperature_min_c: float | None = None
    battery_state: int | None = None
    charge_count: int | None = None
    output_enabled: bool | None = None


READING_FIELDS = tuple(name for name in Reading.model_fields if name not in ("time", "site", "cabinet", "slot"))


class ReadingPage(_Out):
    items: list[Reading]
    next_cursor: Cursor | None = Field(description="send as ?cursor= for the next page; null on the last page")


class HealthPack(_Out):
    """A pack's health as the newest analysis (``cascade health analyse``, docs/battery-health.md) found it.
    A value not measured is null; units are in the names."""

    battery: Name
    analysed_at: datetime = Field(description="the end of the analysed range")
    last_seen: datetime | None = Field(description="the pack's own last reading")
    site: Name
    place: Name = Field(description="the cabinet or vehicle it was last seen in")
    place_kind: Name | None = Field(description="cabinet or vehicle")
    slot: int | None
    grade: Grade = Field(description="keep, restrict (second life / lighter duty), retire, or unknown (too little "
                                     "data)")
    limits_crossed: list[Name] = Field(description="ids of the grading limits the pack is past")
    capacity_ah: float | None = None
    capacity_sigma_ah: float | None = None
    capacity_estimates: int | None = None
    nominal_capacity_ah: float | None = None
    soh_pct: float | None = None
    soh_sigma_pct: float | None = None
    soh_bms_pct: float | None = Field(default=None, description="what the BMS reports")
    soh_disagrees: bool | None = Field(default=None, description="the BMS's SOH is outside the estimate's band")
    resistance_mohm: float | None = None
    resistance_sigma_mohm: float | None = None
    resistance_steps: int | None = None
    fade_pct_per_100_cycles: float | None = None
    cycles: float | None = None
    equivalent_cycles: float | None = None
    cycles_to_90: float | None = None
    cycles_to_80: float | None = None
    cycles_to_70: float | None = None
    self_discharge_pct_per_day: float | None = None
    retention_pct: float | None = None
    recovery_pct: float | None = None
    energy_in_kwh: float | None = None
    energy_out_kwh: float | None = None
    efficiency_pct: float | None = None
    charge_sessions: int | None = None


#: The measured values of a pack's health, as stored (fields of ``battery_health``, docs/schema.md).
HEALTH_VALUES = tuple(name for name, info in HealthPack.model_fields.items()
                      if name != "slot" and info.annotation in (float | None, int | None, bool | None))


class HealthPackPage(_Out):
    items: list[HealthPack]
    next_cursor: Cursor | None


class AlertAck(_Out):
    at: datetime
    level: int
    who: Name | None = Field(description="null for a regulator (personal data)")
    comment: Text | None = Field(description="null for a regulator (personal data)")


class Alert(_Out):
    key: Short
    rule: Name
    category: Name
    level: Level
    site: Name
    cabinet: Name
    slot: int | None
    battery: Name | None
    value: float | None
    raised_at: datetime
    updated_at: datetime
    protective_action: Name | None
    summary: Text | None
    diagnosis: Text | None
    action: Text | None
    acknowledged: bool
    ack: AlertAck | None
    source: Literal["engine", "service"]


class AlertPage(_Out):
    items: list[Alert]
    next_cursor: Cursor | None


class LevelCondition(_Out):
    level: Level
    threshold: float
    compare: Name
    for_s: float
    protective_action: Name | None


class RuleThresholds(_Out):
    id: Name
    description: Text
    unit: Name
    scope: Name
    hysteresis: float
    levels: list[LevelCondition]


class ThresholdList(_Out):
    rules: list[RuleThresholds]


class FusionTerm(_Out):
    input: Short
    start: float
    full: float
    weight: float


class TriggerCondition(_Out):
    """How a rule of the catalogue triggers (docs/warnings.md)."""

    id: Name
    name: Short
    description: Text
    category: Name
    scope: Name
    unit: Name
    input: Short | None = Field(description="what the rule measures; null for a fusion rule")
    fusion: list[FusionTerm]
    guard: Short | None = Field(description="the rule applies only when this holds")
    hysteresis: float
    clear_for_s: float
    levels: list[LevelCondition]
    overrides: int = Field(description="threshold overrides by chemistry or cabinet model")
    diagnosis: Text
    action: Text


class TriggerList(_Out):
    rules: list[TriggerCondition]


class AuditEntry(_Out):
    at: datetime
    rule: Name
    level: int
    old: float | None
    new: float
    who: Name | None = Field(description="null for a regulator (personal data)")
    reason: Text | None = Field(description="null for a regulator (personal data)")


class AuditPage(_Out):
    items: list[AuditEntry]
    next_cursor: Cursor | None


class CommandEntry(_Out):
    """A protective action of a rule or a person's remote command, with its read-back."""

    at: datetime
    completed_at: datetime
    actor: Short | None = Field(description="rule:<id>, or user:<name> (null for a regulator)")
    alert: Short
    action: Name
    command: Name
    site: Name
    cabinet: Name
    slot: int | None
    value: int
    result: Name
    readback: int | None
    error: Text
    reason: Text | None = Field(description="null for a regulator (personal data)")


class CommandPage(_Out):
    items: list[CommandEntry]
    next_cursor: Cursor | None


class AlarmCount(_Out):
    category: Name
    category_name: Short
    level: int
    count: int


class AlarmStats(_Out):
    since: datetime
    until: datetime
    total: int
    counts: list[AlarmCount] = Field(description="alarms raised or escalated to a level, by category and level")


class Delivery(_Out):
    """One attempt to push a warning signal to a subscriber."""

    id: Name
    subscriber: Name
    event: Name
    attempt: int
    at: datetime
    status: int | None = Field(description="the subscriber's HTTP status; null when it could not be reached")
    result: Literal["delivered", "retrying", "failed"]
    error: Text


class DeliveryPage(_Out):
    items: list[Delivery]
    next_cursor: Cursor | None


class WarningSignalAlert(_Out):
    rule: Name
    category: Name
    kind: Literal["raise", "escalate", "de-escalate", "clear"]
    level: int = Field(description="0 when cleared")
    from_level: int
    severity: Name
    site: Name
    cabinet: Name
    slot: int | None
    battery: Name | None
    value: float | None
    summary: Text | None
    diagnosis: Text | None
    action: Text | None


class WarningSignal(_Out):
    """What a subscriber's webhook receives (POST, JSON), signed: ``X-Cascade-Signature: sha256=<hex>`` is
    HMAC-SHA256 with the subscriber's secret over ``<X-Cascade-Timestamp>.<body>``."""

    id: Name = Field(description="the delivery id: the same on every retry (deduplicate on it)")
    event: Literal["alert"]
    at: datetime
    alert: WarningSignalAlert
