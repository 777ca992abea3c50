"""Fault scenarios: YAML timelines of faults applied to one cabinet (and slot) of the fleet.

A scenario is validated when loaded; every error names the file, the key and the fix::

    name: over_temperature
    description: Pack heats to 70 °C while charging.
    target: {cabinet: C0003, slot: 5}
    steps:
      - {at: 0s, ramp: {temperature_c: 70}, over: 5m}
      - {at: 5m, protect: {bms: [high_temperature]}}

Step times (``at``, ``over``, ``for``, runaway ``duration``) are scenario time: a run started
with ``speed`` 10 plays a 30-minute timeline in 3 minutes. The actions are listed in
:data:`ACTIONS` and documented in ``docs/simulator.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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

from .cabinet import CabinetState, Runaway, make_battery
from .register_bank import CUTOFF_YIELDING_FIELDS, Override, cut_off_slot, release_override, reported_value

__all__ = [
    "ACTIONS",
    "SCENARIO_DIR",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "Step",
    "check_target",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
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
_EXTRA_KEYS = {"ramp": {"over"}, "unreachable": {"mode"}}
_SLOT_ONLY = {"runaway", "output", "insert", "protect", "clear_protect"}
_FLAGS = {"charger": ChargerProtection, "bms": BmsProtection}
_INSERT_KEYS = {"battery_id", "battery_maker", "chemistry", "nominal_voltage_v", "soc_pct", "handshake",
                "temperature_c"}
_run_ids = itertools.count(1)


class ScenarioError(InputError):
    """A scenario that cannot be used; the message names the file, the key and the fix."""


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
    raise ScenarioError(source, key, f"{name!r} is not a field of core.model",
                        f"use a slot field ({', '.join(sorted(SLOT_FIELDS))}) or a cabinet field "
                        f"({', '.join(sorted(CABINET_FIELDS))})")


def _field_list(value: Any, source: str, key: str, slot: int | None, allow_all: bool = False) -> list[str] | str:
    if allow_all and value == "all":
        return "all"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ScenarioError(source, key, f"{value!r} is not a list of field names",
                            "e.g. [temperature_c, h2_ppm]" + (" or all" if allow_all else ""))
    for i, name in enumerate(value):
        _field_where(name, slot, source, f"{key}[{i}]")
    return list(value)


def _flag_names(value: Any, source: str, key: str) -> dict[str, int]:
    if not isinstance(value, dict) or not value or set(value) - set(_FLAGS):
        raise ScenarioError(source, key, f"{value!r} is not a mapping of charger/bms flag lists",
                            "e.g. {charger: [over_voltage_cutoff], bms: [over_voltage]}")
    masks = {}
    for group, names in value.items():
        flags = _FLAGS[group]
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            raise ScenarioError(source, f"{key}.{group}", f"{names!r} is not a list", "e.g. [over_voltage]")
        mask = 0
        for i, name in enumerate(names):
            member = flags.__members__.get(str(name).upper())
            if member is None:
                raise ScenarioError(source, f"{key}.{group}[{i}]", f"{name!r} is not a {flags.__name__} flag",
                                    f"use one of {', '.join(m.lower() for m in flags.__members__)}")
            mask |= member
        masks[group] = mask
    return masks


def _parse_value(action: str, value: Any, step: dict, source: str, key: str, slot: int | None) -> tuple[Any, dict]:
    options: dict[str, Any] = {}
    if action in ("set", "ramp"):
        if not isinstance(value, dict) or not value:
            raise ScenarioError(source, key, f"{value!r} is not a mapping of field → value",
                                "e.g. {temperature_c: 70}")
        for name, v in value.items():
            _field_where(name, slot, source, f"{key}.{name}")
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            if action == "ramp" and not numeric:
                raise ScenarioError(source, f"{key}.{name}", f"{v!r} is not a number", "ramp to a number")
            if action == "set" and not (numeric or isinstance(v, (bool, str)) or v is None):
                raise ScenarioError(source, f"{key}.{name}", f"{v!r} is not a number, bool or string",
                                    "set a plain value")
        if action == "ramp":
            over = parse_duration(step.get("over"))
            if over is None:
                raise ScenarioError(source, key.rsplit(".", 1)[0] + ".over", f"{step.get('over')!r} is not a duration",
                                    "give ramps a duration, e.g. over: 5m")
            options["over"] = over
        return dict(value), options
    if action in ("freeze", "dead", "garbage"):
        return _field_list(value, source, key, slot), options
    if action == "release":
        return _field_list(value, source, key, slot, allow_all=True), options
    if action == "unreachable":
        seconds = parse_duration(value)
        if not seconds:
            raise ScenarioError(source, key, f"{value!r} is not a positive duration", "e.g. unreachable: 2m")
        mode = step.get("mode", "refuse")
        if mode not in ("refuse", "silent"):
            raise ScenarioError(source, key.rsplit(".", 1)[0] + ".mode", f"{mode!r}",
                                "use refuse (connection refused) or silent (no answer, timeouts)")
        options["mode"] = mode
        return seconds, options
    if action == "protect":
        return _flag_names(value, source, key), options
    if action == "clear_protect":
        return ("all" if value == "all" else _flag_names(value, source, key)), options
    if action == "emergency":
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            raise ScenarioError(source, key, f"{value!r} is not a list", "e.g. [suppression_by_smoke], or [] to clear")
        mask = 0
        for i, name in enumerate(names):
            member = EmergencyState.__members__.get(str(name).upper())
            if member is None:
                raise ScenarioError(source, f"{key}[{i}]", f"{name!r} is not an emergency flag",
                                    f"use one of {', '.join(m.lower() for m in EmergencyState.__members__)}")
            mask |= member
        return mask, options
    if action == "runaway":
        value = value or {}
        duration = parse_duration(value.get("duration", "30m")) if isinstance(value, dict) else None
        if not duration:
            raise ScenarioError(source, f"{key}.duration", f"{value!r} has no positive duration",
                                "e.g. runaway: {duration: 30m}")
        return duration, options
    if action == "output":
        if not isinstance(value, bool):
            raise ScenarioError(source, key, f"{value!r} is not true/false", "output: false opens the relay")
        return value, options
    if action == "insert":
        value = value or {}
        if not isinstance(value, dict) or set(value) - _INSERT_KEYS:
            raise ScenarioError(source, key, f"{value!r} has unknown keys", f"use {sorted(_INSERT_KEYS)}")
        if "chemistry" in value and str(value["chemistry"]).upper() not in ("LFP", "NMC", "LMO", "NA_ION"):
            raise ScenarioError(source, f"{key}.chemistry", f"{value['chemistry']!r}", "use lfp, nmc, lmo or na_ion")
        if value.get("handshake", "ok") not in ("ok", "fail"):
            raise ScenarioError(source, f"{key}.handshake", f"{value['handshake']!r}", "use ok or fail")
        return dict(value), options
    raise AssertionError(action)


def parse_scenario(text: str, source: str | Path = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML; raise :class:`ScenarioError` naming source, key and fix."""
    source = str(source)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(source, "(file)", f"not valid YAML: {err}", "fix the YAML syntax") from err
    if not isinstance(doc, dict):
        raise ScenarioError(source, "(top level)", "expected a mapping", "see simulators/scenarios/*.yaml")
    unknown = set(doc) - {"name", "description", "target", "steps"}
    if unknown:
        raise ScenarioError(source, sorted(unknown)[0], "unknown key", "use name, description, target, steps")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError(source, "name", f"{name!r} is not a name", "e.g. name: over_temperature")
    target = doc.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("cabinet"), str):
        raise ScenarioError(source, "target.cabinet", f"{target!r} names no cabinet",
                            "e.g. target: {cabinet: C0003, slot: 5}")
    if set(target) - {"cabinet", "slot"}:
        raise ScenarioError(source, "target", f"unknown keys {sorted(set(target) - {'cabinet', 'slot'})}",
                            "use cabinet and slot")
    slot = target.get("slot")
    if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool) or slot < 1):
        raise ScenarioError(source, "target.slot", f"{slot!r} is not a slot number", "slots count from 1")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(source, "steps", "missing or empty", "list the steps, e.g. - {at: 0s, dead: [h2_ppm]}")
    steps = []
    for i, entry in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(entry, dict):
            raise ScenarioError(source, where, f"{entry!r} is not a mapping", "e.g. {at: 30s, freeze: [temperature_c]}")
        at = parse_duration(entry.get("at"))
        if at is None:
            raise ScenarioError(source, f"{where}.at", f"{entry.get('at')!r} is not a time",
                                "e.g. at: 90s (units ms, s, m, h)")
        actions = [k for k in entry if k in ACTIONS]
        if len(actions) != 1:
            raise ScenarioError(source, where, f"has {len(actions)} actions {actions}",
                                f"give each step exactly one of {', '.join(ACTIONS)}")
        action = actions[0]
        allowed = {"at", action} | _EXTRA_KEYS.get(action, set())
        extra = set(entry) - allowed
        if extra:
            raise ScenarioError(source, f"{where}.{sorted(extra)[0]}", f"unknown key for a {action} step",
                                f"use {sorted(allowed)}")
        if action in _SLOT_ONLY and slot is None:
            raise ScenarioError(source, f"{where}.{action}", "acts on a slot but the target has no slot",
                                "add target.slot")
        value, options = _parse_value(action, entry[action], entry, source, f"{where}.{action}", slot)
        steps.append(Step(at, action, value, options))
    steps.sort(key=lambda s: s.at_s)  # stable: steps at the same time keep file order
    return Scenario(name=name, description=str(doc.get("description", "")), cabinet=target["cabinet"],
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
