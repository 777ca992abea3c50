"""Fault scenarios: YAML timelines of faults applied to one cabinet (and slot) of the fleet.

A scenario is validated when loaded; every error is one line naming the file, the key and the fix::

    name: over_temperature
    description: Pack heats to 70 °C while charging.
    target: {cabinet: C0003, slot: 5}
    steps:
      - {at: 0s, ramp: {temperature_c: 70}, over: 5m}
      - {at: 5m, protect: {bms: [high_temperature]}}

The schema is pydantic models on :mod:`core.validation`: :class:`ScenarioDoc`, its
:class:`TargetSection` and one step model per action (:data:`STEP_MODELS`), each key's fix as its
description. What a schema cannot say is checked after, with the same file / key / fix errors:
each step has exactly one action (which picks its model), slot fields and slot actions need
``target.slot``, and the target exists in the running fleet (:func:`check_target`).

Step times (``at``, ``over``, ``unreachable``, runaway ``duration``) are scenario time: a run
started with ``speed`` 10 plays a 30-minute timeline in 3 minutes. The actions are listed in
:data:`ACTIONS` and documented in ``docs/simulator.md`` (its key reference is
:func:`scenario_reference`).
"""

from __future__ import annotations

import difflib
import enum
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    PlainValidator,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from core.durations import DurationError
from core.durations import parse_duration as _parse_duration
from core.errors import InputError
from core.model import (
    CABINET_FIELDS,
    SLOT_FIELDS,
    BmsProtection,
    ChargerProtection,
    Chemistry,
    EmergencyState,
)
from core.validation import (
    Bool,
    Field,
    Float,
    Int,
    Model,
    Shown,
    default_text,
    one_line,
    short_value,
    shown_default,
    type_text,
    validate,
)

from .cabinet import CabinetState, Runaway, make_battery
from .register_bank import CUTOFF_YIELDING_FIELDS, Override, cut_off_slot, release_override, reported_value

__all__ = [
    "ACTIONS",
    "SCENARIO_DIR",
    "STEP_MODELS",
    "Scenario",
    "ScenarioDoc",
    "ScenarioError",
    "ScenarioRun",
    "Step",
    "TargetSection",
    "check_target",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "scenario_reference",
]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

#: Step actions and what each one's value is.
ACTIONS = {
    "set": "mapping field → value, reported until released",
    "ramp": "mapping field → number, reached linearly over `over`, then held",
    "freeze": "list of fields stuck at their current value (stuck sensor)",
    "dead": "list of fields returning their `missing` sentinel, else 0xFFFF words",
    "garbage": "list of fields returning random register words",
    "release": "list of fields (or `all`) handed back to the physics",
    "unreachable": "duration the cabinet stops answering (`mode: refuse` or `silent`)",
    "protect": "{charger: [flags], bms: [flags]} protection bits to set",
    "clear_protect": "{charger: [flags], bms: [flags]} bits to clear, or `all`",
    "emergency": "list of emergency-state flags to set ([] clears)",
    "runaway": "{duration: 30m} start a thermal runaway in the target slot",
    "output": "true/false: the cabinet itself closes or opens the slot relay",
    "insert": "battery fields for a pack docked now, e.g. {chemistry: nmc, handshake: fail}",
}
_SLOT_ONLY = {"runaway", "output", "insert", "protect", "clear_protect"}
_FLAGS: dict[str, type[enum.IntFlag]] = {"charger": ChargerProtection, "bms": BmsProtection}
_CHEMISTRIES = ("lfp", "nmc", "lmo", "na_ion")  # the chemistries the simulator has cell models for
_run_ids = itertools.count(1)


class ScenarioError(InputError):
    """A scenario that cannot be used; the message names the file, the key and the fix, on one line."""

    def __init__(self, source: str | Path, key: str, problem: str, fix: str) -> None:
        super().__init__(one_line(str(source)), one_line(key), one_line(problem), one_line(fix))


def parse_duration(value: Any) -> float | None:
    """Seconds (:func:`core.durations.parse_duration`), or ``None`` so the caller names the key."""
    try:
        return _parse_duration(value)
    except DurationError:
        return None


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline entry: at ``at_s`` scenario seconds, do ``action`` with ``value``."""

    at_s: float
    action: str
    value: Any
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario."""

    name: str
    description: str
    cabinet: str
    slot: int | None
    steps: tuple[Step, ...]
    source: str

    @property
    def length_s(self) -> float:
        """Scenario seconds until the last step has fully played (ramps and outages included)."""
        ends = [s.at_s + float(s.options.get("over", 0) or 0) for s in self.steps]
        ends += [s.at_s + s.value for s in self.steps if s.action in ("unreachable", "runaway")]
        return max(ends, default=0.0)


def _field_where(name: Any, slot: int | None, source: str, key: str) -> int | None:
    """Which part of the cabinet a field belongs to: the target slot, or ``None`` = cabinet."""
    if name in SLOT_FIELDS:
        if slot is None:
            raise ScenarioError(source, key, f"{name} is a slot field but the target has no slot",
                                "add target.slot")
        return slot
    if name in CABINET_FIELDS:
        return None
    raise ScenarioError(source, key, f"{name!r} is not a field of core.model", _field_fix(name))


# --- value types: each refuses with "problem. Fix: ..." or leaves the fix to the key's description ---




def _duration(value: Any) -> float:
    try:
        return _parse_duration(value)
    except DurationError:
        raise ValueError(f"{short_value(value)} is not a duration") from None


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"{short_value(value)} is not a positive duration")
    return seconds


def _one_or_list(value: Any) -> Any:
    """``dead: h2_ppm`` is ``dead: [h2_ppm]``."""
    return [value] if isinstance(value, str) else value


def _not_empty(value: Any) -> Any:
    if not value:
        raise ValueError(f"{short_value(value)} is empty")
    return value


def _or_all(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """``all`` as it is, anything else validated as the annotated type (keys stay the type's own)."""
    return "all" if isinstance(value, str) and value == "all" else handler(value)


def _field_fix(name: Any) -> str:
    close = difflib.get_close_matches(str(name), [*SLOT_FIELDS, *CABINET_FIELDS], n=1)
    hint = f"did you mean {close[0]!r}? Otherwise use" if close else "use"
    return (f"{hint} a slot field ({', '.join(sorted(SLOT_FIELDS))}) or a cabinet field "
            f"({', '.join(sorted(CABINET_FIELDS))})")


def _known_field(name: str) -> str:
    if name not in SLOT_FIELDS and name not in CABINET_FIELDS:
        raise ValueError(f"{short_value(name)} is not a field of core.model. Fix: {_field_fix(name)}")
    return name


def _flag_name(flags: type[enum.IntFlag]) -> Callable[[str], str]:
    names = ", ".join(m.lower() for m in flags.__members__)
    article = "an" if flags.__name__[0] in "AEIOU" else "a"

    def check(name: str) -> str:
        if name.upper() not in flags.__members__:
            raise ValueError(f"{short_value(name)} is not {article} {flags.__name__} flag. Fix: use one of {names}")
        return name.upper().lower()  # the member's own name, however it was written
    return check


def _mask(flags: type[enum.IntFlag], names: list[str]) -> int:
    mask = 0
    for name in names:
        mask |= flags.__members__[name.upper()]
    return mask


def _plain_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{short_value(value)} is not a number, true/false, text or null")


def _null_is_empty(value: Any) -> Any:
    """``description:`` written without text is no description."""
    return "" if value is None else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Text = Annotated[str, AfterValidator(_not_empty), Shown("text")]
Duration = Annotated[float, BeforeValidator(_duration), Shown("duration")]
"""Scenario seconds from ``90``, ``90s``, ``5m``, ``3m30s``, ``1.5h`` or ``500ms``."""
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration), Shown("duration > 0")]
FieldName = Annotated[str, AfterValidator(_known_field), Shown("field")]
"""A field of :mod:`core.model` (whether the target has the slot it needs is checked after)."""
FieldList = Annotated[list[FieldName], BeforeValidator(_one_or_list), AfterValidator(_not_empty),
                      Shown("list of fields")]
SetValue = Annotated[Any, PlainValidator(_plain_value), Shown("number, true/false, text or null")]
ChargerFlags = Annotated[list[Annotated[str, AfterValidator(_flag_name(ChargerProtection))]],
                         BeforeValidator(_one_or_list), Shown("list of ChargerProtection flags")]
BmsFlags = Annotated[list[Annotated[str, AfterValidator(_flag_name(BmsProtection))]],
                     BeforeValidator(_one_or_list), Shown("list of BmsProtection flags")]
EmergencyFlags = Annotated[list[Annotated[str, AfterValidator(_flag_name(EmergencyState))]],
                           BeforeValidator(_one_or_list), Shown("list of EmergencyState flags")]
ChemistryName = Annotated[Literal[_CHEMISTRIES], BeforeValidator(_lower)]  # type: ignore[valid-type]





# --- the schema -----------------------------------------------------------------------------------


class TargetSection(Model):
    """``target:``: the cabinet (and slot) the steps act on."""

    cabinet: Text = Field(description="the cabinet's id in the fleet, e.g. target: {cabinet: C0003, slot: 5}")
    slot: Int | None = Field(
        default=None, ge=1, json_schema_extra=shown_default("none: the cabinet"),
        description="the slot, counted from 1, e.g. slot: 5 (needed for slot fields and slot actions)")


class ScenarioDoc(Model):
    """A scenario file as written; each step is then validated by its action's model."""

    name: Text = Field(description="the scenario's name, e.g. name: over_temperature")
    description: Annotated[str, BeforeValidator(_null_is_empty)] = Field(
        default="", description="what the scenario shows, in a sentence or two")
    # Validated when left out too (validate_default): a missing target reports target.cabinet.
    target: TargetSection = Field(default={}, json_schema_extra=shown_default("(required)"),  # type: ignore[arg-type]
                                  description="a mapping, e.g. target: {cabinet: C0003, slot: 5}")
    steps: Annotated[list[dict[Any, Any]], AfterValidator(_not_empty)] = Field(
        json_schema_extra={"shown_type": "list of steps"},
        description="list the steps, each a mapping such as - {at: 0s, dead: [h2_ppm]}")


class PackSpec(Model):
    """``insert:``: the pack docked now; what is left out is random, as for any new pack."""

    chemistry: ChemistryName | None = Field(default=None, json_schema_extra=shown_default("random"),
                                            description="use lfp, nmc, lmo or na_ion")
    nominal_voltage_v: Float | None = Field(default=None, gt=0, json_schema_extra=shown_default("random"),
                                            description="the pack's nominal voltage in volts, e.g. 48 or 60")
    soc_pct: Float | None = Field(default=None, ge=0, le=100, json_schema_extra=shown_default("random"),
                                  description="state of charge in percent, 0-100, e.g. 30")
    battery_id: Text | None = Field(default=None, json_schema_extra=shown_default("random"),
                                    description="the pack's id as text, e.g. NM48-FAULTY001")
    battery_maker: Text | None = Field(default=None, json_schema_extra=shown_default("random"),
                                       description="the maker's name as text, e.g. Tenpower")
    temperature_c: Float | None = Field(default=None, json_schema_extra=shown_default("random"),
                                        description="the pack's temperature in °C when docked, e.g. 25")
    handshake: Literal["ok", "fail"] = Field(
        default="ok", description="ok, or fail: the charger does not recognise the pack and refuses to charge")


class RunawaySpec(Model):
    """``runaway:``: a thermal runaway in the target slot."""

    duration: PositiveDuration = Field(default="30m",  # type: ignore[assignment]
                                       description="from first off-gas to flame, e.g. duration: 30m")


class ProtectFlags(Model):
    """``protect:`` / ``clear_protect:``: protection bits by group."""

    charger: ChargerFlags = Field(
        default=[], description=f"ChargerProtection flags, e.g. [over_voltage_cutoff]: "
        f"{', '.join(m.lower() for m in ChargerProtection.__members__)}")
    bms: BmsFlags = Field(
        default=[], description=f"BmsProtection flags, e.g. [over_voltage]: "
        f"{', '.join(m.lower() for m in BmsProtection.__members__)}")

    @model_validator(mode="after")
    def _names_a_group(self) -> ProtectFlags:
        if not self.model_fields_set:
            raise ValueError("{} names no flags. Fix: e.g. {charger: [over_voltage_cutoff], bms: [over_voltage]}")
        return self

    def masks(self) -> dict[str, int]:
        """Bit masks of the groups written (a group left out is left alone)."""
        return {group: _mask(_FLAGS[group], getattr(self, group)) for group in _FLAGS if group in self.model_fields_set}


def _action(description: str, **kwargs: Any) -> Any:
    """The field of a step's action: its key names the action, its description is its fix."""
    return Field(description=description, json_schema_extra=shown_default("(one action)"), **kwargs)


class StepModel(Model):
    """A step as written: ``at`` and one action (a subclass each), with the action's own keys."""

    action: ClassVar[str]

    at: Duration = Field(description="the step's time from the start, e.g. at: 90s (90, 90s, 5m, 3m30s, 1.5h, 500ms)")

    def value(self) -> Any:
        """:attr:`Step.value`: what :class:`ScenarioRun` applies."""
        return getattr(self, self.action)

    def options(self) -> dict[str, Any]:
        """:attr:`Step.options`: the action's own keys."""
        return {}

    def fields(self) -> list[tuple[str, str]]:
        """The ``core.model`` fields the step names, each as (key under the action, name)."""
        return []


class _FieldsStep(StepModel):
    def value(self) -> Any:
        names = getattr(self, self.action)
        return names if names == "all" else list(names)

    def fields(self) -> list[tuple[str, str]]:
        names = getattr(self, self.action)
        return [] if names == "all" else [(f"[{i}]", name) for i, name in enumerate(names)]


class SetStep(StepModel):
    action: ClassVar[str] = "set"
    set: Annotated[dict[FieldName, SetValue], AfterValidator(_not_empty)] = _action(
        "a mapping of fields to values (number, true/false, text or null), e.g. {water_detected: true}")

    def value(self) -> Any:
        return dict(self.set)

    def fields(self) -> list[tuple[str, str]]:
        return [(f".{name}", name) for name in self.set]


class RampStep(StepModel):
    action: ClassVar[str] = "ramp"
    ramp: Annotated[dict[FieldName, Float], AfterValidator(_not_empty)] = _action(
        "a mapping of fields to numbers, e.g. {temperature_c: 70}")
    over: Duration = Field(description="give ramps a duration, e.g. over: 5m")

    def value(self) -> Any:
        return dict(self.ramp)

    def options(self) -> dict[str, Any]:
        return {"over": self.over}

    def fields(self) -> list[tuple[str, str]]:
        return [(f".{name}", name) for name in self.ramp]


class FreezeStep(_FieldsStep):
    action: ClassVar[str] = "freeze"
    freeze: FieldList = _action("a list of fields, e.g. [temperature_c]")


class DeadStep(_FieldsStep):
    action: ClassVar[str] = "dead"
    dead: FieldList = _action("a list of fields, e.g. [temperature_c, h2_ppm]")


class GarbageStep(_FieldsStep):
    action: ClassVar[str] = "garbage"
    garbage: FieldList = _action("a list of fields, e.g. [voltage_v, battery_id]")


class ReleaseStep(_FieldsStep):
    action: ClassVar[str] = "release"
    release: Annotated[FieldList, WrapValidator(_or_all), Shown("list of fields or `all`")] = _action(
        "a list of fields, e.g. [temperature_c, h2_ppm], or all")


class UnreachableStep(StepModel):
    action: ClassVar[str] = "unreachable"
    unreachable: PositiveDuration = _action("how long the cabinet stops answering, e.g. unreachable: 2m")
    mode: Literal["refuse", "silent"] = Field(
        default="refuse", description="refuse (connection refused) or silent (no answer, timeouts)")

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode}


class ProtectStep(StepModel):
    action: ClassVar[str] = "protect"
    protect: ProtectFlags = _action("a mapping of flag lists, e.g. {charger: [over_voltage_cutoff], bms: [over_voltage]}")

    def value(self) -> Any:
        return self.protect.masks()


class ClearProtectStep(StepModel):
    action: ClassVar[str] = "clear_protect"
    clear_protect: Annotated[ProtectFlags, WrapValidator(_or_all), Shown("mapping or `all`")] = _action(
        "a mapping of flag lists, e.g. {bms: [over_voltage]}, or all (an operator cut-off stays)")

    def value(self) -> Any:
        flags: ProtectFlags | str = self.clear_protect
        return flags if isinstance(flags, str) else flags.masks()


class EmergencyStep(StepModel):
    action: ClassVar[str] = "emergency"
    emergency: EmergencyFlags = _action(
        f"a list of EmergencyState flags, e.g. [suppression_by_smoke], or [] to clear: "
        f"{', '.join(m.lower() for m in EmergencyState.__members__)}")

    def value(self) -> Any:
        return _mask(EmergencyState, self.emergency)


class RunawayStep(StepModel):
    action: ClassVar[str] = "runaway"
    runaway: RunawaySpec | None = _action("a mapping, e.g. runaway: {duration: 30m} ({} or null: 30 minutes)")

    def value(self) -> Any:
        return (self.runaway or RunawaySpec()).duration


class OutputStep(StepModel):
    action: ClassVar[str] = "output"
    output: Bool = _action("true closes the slot relay, false opens it (the cabinet's own cut-off)")


class InsertStep(StepModel):
    action: ClassVar[str] = "insert"
    insert: PackSpec | None = _action("a mapping of pack keys, e.g. {chemistry: nmc, soc_pct: 30} ({} or null: random)")

    def value(self) -> Any:
        return {} if self.insert is None else self.insert.model_dump(exclude_unset=True, exclude_none=True)


#: The model of each action's steps; a step's one action key picks its model.
STEP_MODELS: dict[str, type[StepModel]] = {
    model.action: model
    for model in (SetStep, RampStep, FreezeStep, DeadStep, GarbageStep, ReleaseStep, UnreachableStep, ProtectStep,
                  ClearProtectStep, EmergencyStep, RunawayStep, OutputStep, InsertStep)
}
assert list(STEP_MODELS) == list(ACTIONS), "every action has its step model, in the same order"
_NOT_ACTIONS = sorted({key for model in STEP_MODELS.values() for key in model.model_fields} - set(ACTIONS))


# --- parsing --------------------------------------------------------------------------------------


def _one_action(entry: dict[Any, Any], source: str, where: str) -> str:
    """The action of a step: exactly one of :data:`ACTIONS` (which then picks the step's model)."""
    actions = [k for k in entry if k in STEP_MODELS]
    one_of = f"each step exactly one of {', '.join(ACTIONS)}"
    if len(actions) > 1:
        raise ScenarioError(source, where, f"has {len(actions)} actions {actions}", f"give {one_of}")
    if not actions:
        unknown = [k for k in entry if k not in _NOT_ACTIONS]
        if not unknown:
            raise ScenarioError(source, where, "has no action", f"give {one_of}")
        close = difflib.get_close_matches(str(unknown[0]), list(ACTIONS), n=1)
        hint = f"did you mean {close[0]!r}? Otherwise give" if close else "give"
        raise ScenarioError(source, f"{where}.{unknown[0]}", "unknown key, and the step has no action",
                            f"{hint} {one_of}")
    return actions[0]


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's complaint in one line: what, and where (line and column count from 1)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{err.context + ': ' if err.context else ''}{err.problem}{where}"
    return " ".join(str(err).split())


def _parse_step(entry: dict[Any, Any], source: str, where: str, slot: int | None) -> Step:
    action = _one_action(entry, source, where)
    if action in _SLOT_ONLY and slot is None:
        raise ScenarioError(source, f"{where}.{action}", "acts on a slot but the target has no slot",
                            "add target.slot")
    step = validate(STEP_MODELS[action], entry, source, key=where, error=ScenarioError)
    for suffix, name in step.fields():
        _field_where(name, slot, source, f"{where}.{action}{suffix}")
    return Step(step.at, action, step.value(), step.options())


def parse_scenario(text: str, source: str | Path = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML; raise :class:`ScenarioError` naming source, key and fix."""
    source = str(source)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(source, "(file)", f"not valid YAML: {_yaml_problem(err)}", "fix the YAML syntax") from err
    if not isinstance(doc, dict):
        raise ScenarioError(source, "(top level)", f"{short_value(doc)} is not a mapping",
                            "write name:, target: and steps: (see simulators/scenarios/*.yaml)")
    parsed = validate(ScenarioDoc, doc, source, error=ScenarioError)
    slot = parsed.target.slot
    steps = [_parse_step(entry, source, f"steps[{i}]", slot) for i, entry in enumerate(parsed.steps)]
    steps.sort(key=lambda s: s.at_s)  # stable: steps at the same time keep file order
    return Scenario(name=parsed.name, description=parsed.description, cabinet=parsed.target.cabinet,
                    slot=slot, steps=tuple(steps), source=source)


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (``thermal_runaway``)."""
    candidate = Path(path)
    if not candidate.exists() and candidate.suffix not in (".yaml", ".yml"):
        candidate = SCENARIO_DIR / f"{path}.yaml"
    try:
        text = candidate.read_text(encoding="utf-8")
    except OSError as err:
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
        raise ScenarioError(candidate, "(file)", f"cannot read: {err.strerror}",
                            f"check the path, or use a shipped scenario: {', '.join(known)}") from err
    return parse_scenario(text, candidate)


def check_target(scenario: Scenario, cabinet_ids: Mapping[str, int]) -> None:
    """Check the target exists in a fleet given as cabinet id → slot count."""
    if scenario.cabinet not in cabinet_ids:
        some = ", ".join(itertools.islice(cabinet_ids, 3))
        raise ScenarioError(scenario.source, "target.cabinet", f"no cabinet {scenario.cabinet} in the fleet",
                            f"use one of the fleet's ids ({some}, ...) or start more cabinets")
    slots = cabinet_ids[scenario.cabinet]
    if scenario.slot is not None and scenario.slot > slots:
        raise ScenarioError(scenario.source, "target.slot", f"cabinet {scenario.cabinet} has {slots} slots",
                            f"use a slot from 1 to {slots}")

# --- reference docs -------------------------------------------------------------------------------

_REFERENCE: tuple[tuple[str, tuple[type[BaseModel], ...]], ...] = (
    ("Top level", (ScenarioDoc,)),
    ("`target`", (TargetSection,)),
    ("Steps (`steps[]`): `at`, one action and that action's own keys", tuple(STEP_MODELS.values())),
    ("`insert`", (PackSpec,)),
    ("`runaway`", (RunawaySpec,)),
    ("`protect`, `clear_protect`", (ProtectFlags,)),
)
def scenario_reference() -> str:
    """The key tables of docs/simulator.md ("Key reference"), generated from the models here."""
    lines: list[str] = []
    for title, models in _REFERENCE:
        lines += [f"#### {title}", "", "| key | value | default | meaning |", "|---|---|---|---|"]
        seen: set[str] = set()
        for model in models:
            for name, info in model.model_fields.items():
                if name in seen:  # `at` is in every step model
                    continue
                seen.add(name)
                extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
                kind = str(extra.get("shown_type") or type_text(info.annotation, list(info.metadata)))
                owner = getattr(model, "action", None)
                key = f"`{name}` (with `{owner}`)" if owner and name not in (owner, "at") else f"`{name}`"
                meaning = (info.description or "").replace("|", "\\|")
                lines.append(f"| {key} | {kind} | {default_text(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class ScenarioRun:
    """A scenario playing on one cabinet from ``started_s`` (clock seconds) at ``speed``."""

    scenario: Scenario
    cabinet: CabinetState
    started_s: float
    speed: float = 1.0
    id: str = field(default_factory=lambda: f"s{next(_run_ids)}")
    applied: int = 0  # steps applied so far
    # What the run changed, so stopping it puts the cabinet back.
    _flags: dict[str, int] = field(default_factory=lambda: {"charger": 0, "bms": 0})
    _emergency: int = 0
    _touched_unreachable: bool = False
    _touched_runaway: bool = False
    _refused_pack: bool = False

    def step_time(self, step: Step) -> float:
        return self.started_s + step.at_s / self.speed

    def next_time(self) -> float | None:
        """Clock time of the next step to apply, ``None`` when all are applied."""
        if self.applied >= len(self.scenario.steps):
            return None
        return self.step_time(self.scenario.steps[self.applied])

    @property
    def finished_at_s(self) -> float:
        return self.started_s + self.scenario.length_s / self.speed

    def apply_next(self) -> None:
        """Apply the next step at its own time (the cabinet must be advanced to that time)."""
        step = self.scenario.steps[self.applied]
        self.applied += 1
        self._apply(step, self.step_time(step))

    def _apply(self, step: Step, now: float) -> None:
        cab, slot, action, value = self.cabinet, self.scenario.slot, step.action, step.value
        where = lambda name: _field_where(name, slot, self.scenario.source, action)  # noqa: E731
        if action == "set":
            for name, v in value.items():
                cab.overrides[(where(name), name)] = Override(
                    "value", self.id, value=v, yields_to_cutoff=name in CUTOFF_YIELDING_FIELDS)
        elif action == "ramp":
            for name, target in value.items():
                key = (where(name), name)
                start = reported_value(cab, key[0], name, now)
                cab.overrides[key] = Override(
                    "ramp", self.id, value=float(target),
                    start_value=float(start) if isinstance(start, (int, float)) else 0.0,
                    start_s=now, end_s=now + step.options["over"] / self.speed,
                    yields_to_cutoff=name in CUTOFF_YIELDING_FIELDS)
        elif action == "freeze":
            for name in value:
                key = (where(name), name)
                cab.overrides[key] = Override("value", self.id, value=reported_value(cab, key[0], name, now))
        elif action in ("dead", "garbage"):
            for name in value:
                cab.overrides[(where(name), name)] = Override(action, self.id)
        elif action == "release":
            for key in [k for k in cab.overrides if value == "all" or k[1] in value]:
                release_override(cab, key, now)
        elif action == "unreachable":
            cab.unreachable_until = now + value / self.speed
            cab.unreachable_mode = step.options["mode"]
            self._touched_unreachable = True
        elif action == "protect":
            state = cab.slots[slot - 1]
            state.charger_protection |= value.get("charger", 0)
            state.bms_protection |= value.get("bms", 0)
            for group in value:
                self._flags[group] |= value[group]
        elif action == "clear_protect":
            state = cab.slots[slot - 1]
            masks = {"charger": ~int(ChargerProtection.OPERATOR_CUTOFF) & 0xFFFF, "bms": 0xFFFF} \
                if value == "all" else value
            state.charger_protection &= ~masks.get("charger", 0)
            state.bms_protection &= ~masks.get("bms", 0)
        elif action == "emergency":
            cab.emergency_state = (cab.emergency_state | value) if value else 0
            self._emergency |= value
        elif action == "runaway":
            cab.slots[slot - 1].runaway = Runaway(duration_s=value / self.speed)
            self._touched_runaway = True
        elif action == "output":
            cut_off_slot(cab, slot, value, now)
        elif action == "insert":
            self._insert(value, now)

    def _insert(self, spec: dict[str, Any], now: float) -> None:
        state = self.cabinet.slots[self.scenario.slot - 1]
        battery = make_battery(state.rng, state.surface_c)
        if "chemistry" in spec:
            battery.chemistry = Chemistry[str(spec["chemistry"]).upper()]
        for key in ("battery_id", "battery_maker", "nominal_voltage_v", "temperature_c"):
            if key in spec:
                setattr(battery, key, type(getattr(battery, key))(spec[key]))
        # Pack voltage follows chemistry and nominal voltage: recount the cells in series.
        battery.cells = round(battery.nominal_voltage_v / battery.cell.v_nom)
        battery.undervoltage_protection_v = round(battery.cells * battery.cell.v_min, 1)
        if "soc_pct" in spec:
            battery.soc = float(spec["soc_pct"]) / 100
        battery.handshake_ok = spec.get("handshake", "ok") == "ok"
        self._refused_pack |= not battery.handshake_ok
        state.dock(battery, now)

    def stop(self) -> None:
        """Undo what the run did: its overrides, flags, outage and runaway."""
        cab = self.cabinet
        for key in [k for k, o in cab.overrides.items() if o.owner == self.id]:
            del cab.overrides[key]
        if self.scenario.slot is not None:
            state = cab.slots[self.scenario.slot - 1]
            state.charger_protection &= ~self._flags["charger"]
            state.bms_protection &= ~self._flags["bms"]
            if self._touched_runaway:
                state.runaway = None
            if self._refused_pack and state.battery is not None:
                state.battery.handshake_ok = True  # the pack stays docked; the handshake now passes
                state.charger_protection &= ~ChargerProtection.HANDSHAKE_FAILED
        cab.emergency_state &= ~self._emergency
        if self._touched_unreachable:
            cab.unreachable_until = 0.0

    def describe(self, now: float) -> dict[str, Any]:
        """JSON-ready summary for ``GET /scenarios``."""
        return {
            "id": self.id, "name": self.scenario.name, "description": self.scenario.description,
            "target": {"cabinet": self.scenario.cabinet, "slot": self.scenario.slot},
            "speed": self.speed, "started_s": self.started_s,
            "steps_applied": self.applied, "steps": len(self.scenario.steps),
            "finished": self.applied >= len(self.scenario.steps) and now >= self.finished_at_s,
            "source": self.scenario.source,
        }
