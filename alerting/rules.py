"""Warning rules as data: load, validate and resolve the YAML rule catalogue.

A rule turns one *input* (a value derived from a reading) into a warning level 0–3 by comparing it
with up to three thresholds (GB/T 32960 scale: 1 = no effect on operation, 2 = restrict use,
3 = stop now / dispatch). Everything that can be checked is checked here, once, at start-up, so the
engine's hot path only compares numbers. See docs/warnings.md for the format.

    >>> rules = load_rules(DEFAULT_CATALOGUE)
    >>> rules["over_temperature"].levels[-1].threshold
    70.0
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import model
from core.durations import parse_duration
from core.errors import CascadeError
from core.model import (
    CABINET_FIELDS,
    DERIVED_SLOT_FIELDS,
    FIELD_CATEGORIES,
    SLOT_FIELDS,
    VEHICLE_FIELDS,
    BmsProtection,
    ChargerProtection,
    Chemistry,
    EmergencyState,
)

__all__ = [
    "DEFAULT_CATALOGUE",
    "PROTECTIVE_ACTIONS",
    "VEHICLE_COMMANDS",
    "FusionTerm",
    "Input",
    "Level",
    "Override",
    "Rule",
    "RuleError",
    "RuleSet",
    "finite_number",
    "load_rules",
    "parse_duration",
    "parse_rules",
    "validate_levels",
]

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.yaml")

# Names the protective-action executor (another component) understands. Kept closed so a typo in
# the catalogue is a start-up error rather than an action that silently never happens.
PROTECTIVE_ACTIONS = frozenset({"stop_charging", "slot_cutoff", "cabinet_cutoff"})
# Vehicle commands a rule may ask for when it raises on a vehicle (V-5.1 motor lock, V-5.10 cut the
# discharge); the vehicle command service sends them. Closed for the same reason.
VEHICLE_COMMANDS = frozenset({"motor_lock", "power_off"})

INPUT_KINDS = ("field", "rate_of", "delta", "jump", "flag", "bool", "lost", "fusion")
COMPARES = (">", ">=", "<", "<=")
SCOPES = ("slot", "cabinet", "vehicle")
FLAG_TYPES: dict[str, type] = {
    "charger_protection": ChargerProtection,
    "bms_protection": BmsProtection,
    "emergency_state": EmergencyState,
}
# P-3.3: the warning system is independent of fire suppression. Rules that read its state may
# report it but must never drive a protective action from it.
READ_ONLY_FIELDS = frozenset({"emergency_state"})
_PLACEHOLDERS = frozenset(
    {"value", "threshold", "level", "site", "cabinet", "slot", "battery", "rule", "evidence"}
)
_RULE_KEYS = frozenset(
    {
        "id", "name", "description", "source", "scope", "input", "compare", "levels", "for", "hysteresis",
        "clear_for", "when", "overrides", "diagnosis", "action", "unit", "vehicle_command",
    }
)


class RuleError(CascadeError):
    """A rule file is invalid. The message names file, rule, key and what to do."""

    def __init__(self, file: str, rule: str | None, key: str | None, reason: str) -> None:
        self.file, self.rule, self.key, self.reason = file, rule, key, reason
        where = [file]
        if rule is not None:
            where.append(f"rule {rule!r}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(reason, source=file, key=key, message=": ".join(where) + f": {reason}")


SLOT_FIELD_KINDS = {**{k: FIELD_CATEGORIES[k] for k in SLOT_FIELDS}, **DERIVED_SLOT_FIELDS}
CABINET_FIELD_KINDS = {k: FIELD_CATEGORIES[k] for k in CABINET_FIELDS}
VEHICLE_FIELD_KINDS = dict(VEHICLE_FIELDS)
_SCOPE_KINDS = {"slot": SLOT_FIELD_KINDS, "cabinet": CABINET_FIELD_KINDS, "vehicle": VEHICLE_FIELD_KINDS}


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a number (bools are not numbers) or is
    NaN, infinite or too large for a float (a huge YAML/JSON integer would otherwise raise
    OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a 400-digit integer keeps a message readable."""
    try:
        text = repr(value)
    except ValueError:  # int too large to convert to text (sys.set_int_max_str_digits)
        return f"an integer of about {value.bit_length() * 3 // 10} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Input:
    """What a rule measures. ``key`` identifies it so rules sharing an input share its buffers."""

    kind: str  # one of INPUT_KINDS except "fusion"
    fields: tuple[str, ...]
    window_s: float = 0.0  # rate_of
    mask: int = 0  # flag
    up_only: bool = False  # jump: count increases only (cumulative counters)
    per: str | None = None  # field: divide by this field (e.g. max_charge_current_a)
    minus: str | None = None  # field (slot scope): subtract a baseline, see BASELINES

    @property
    def key(self) -> tuple:
        return (self.kind, self.fields, self.window_s, self.mask, self.up_only, self.per, self.minus)

    def describe(self) -> str:
        if self.kind == "field":
            return (self.fields[0] + (f" / {self.per}" if self.per else "")
                    + (f" − {_BASELINE_SHORT[self.minus]}" if self.minus else ""))
        if self.kind == "rate_of":
            return f"d({self.fields[0]})/dt per min over {self.window_s:g}s"
        if self.kind == "delta":
            return f"{self.fields[0]} − {self.fields[1]}"
        if self.kind == "jump":
            return f"change of {self.fields[0]} between readings" + (" (up)" if self.up_only else "")
        if self.kind == "flag":
            flag_type = FLAG_TYPES[self.fields[0]]
            return f"{self.fields[0]} & {model.describe_flags(flag_type, self.mask)}"
        if self.kind == "lost":
            return f"{self.fields[0]} stopped reporting (1) / reporting (0)"
        return self.fields[0]


@dataclass(frozen=True, slots=True)
class FusionTerm:
    """One piece of evidence: strength rises linearly from 0 at ``start`` to 1 at ``full``."""

    input: Input
    start: float
    full: float
    weight: float
    hold_s: float = 0.0  # keep the strongest recent strength this long (momentary events)


@dataclass(frozen=True, slots=True)
class Level:
    level: int  # 1, 2 or 3
    threshold: float
    compare: str  # one of COMPARES
    for_s: float
    protective_action: str | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """Replaces thresholds (and optionally hysteresis) for some chemistries and/or cabinet models."""

    chemistry: frozenset[int] | None
    model: frozenset[str] | None
    levels: Mapping[int, Mapping[str, Any]]  # level -> partial Level fields
    hysteresis: float | None = None

    def matches(self, cabinet_model: str, chemistry: int | None) -> bool:
        if self.chemistry is not None and chemistry not in self.chemistry:
            return False
        return self.model is None or cabinet_model in self.model


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    source: str
    scope: str  # "slot" or "cabinet"
    input: Input | None  # None for fusion rules
    fusion: tuple[FusionTerm, ...]
    levels: tuple[Level, ...]  # sorted by level, at least one
    hysteresis: float
    clear_for_s: float
    when: tuple[Input, str, float] | None  # guard: (input, compare, value)
    overrides: tuple[Override, ...]
    diagnosis: str
    action: str
    unit: str = ""
    file: str = "<rules>"
    #: Short display name for pages and dashboards ("Battery over-temperature"); the description
    #: when the rule file gives none. Translated like the other texts (alerting/i18n.py).
    name: str = ""
    #: A vehicle command (VEHICLE_COMMANDS) to send when the rule raises or escalates on a vehicle.
    vehicle_command: str | None = None
    _resolved: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def inputs(self) -> tuple[Input, ...]:
        """Every input this rule reads (fusion terms and guard included)."""
        found = [t.input for t in self.fusion] if self.fusion else [self.input]
        if self.when is not None:
            found.append(self.when[0])
        return tuple(found)

    @property
    def read_only_fields(self) -> frozenset[str]:
        """Fire-suppression fields (READ_ONLY_FIELDS) this rule reads anywhere, guard included.
        Non-empty means the rule must never drive a protective action (P-3.3)."""
        return frozenset(f for inp in self.inputs for f in inp.fields) & READ_ONLY_FIELDS

    def resolve(self, cabinet_model: str, chemistry: int | None) -> tuple[tuple[Level, ...], float]:
        """Levels and hysteresis after applying matching overrides in file order (cached)."""
        key = (cabinet_model, chemistry)
        hit = self._resolved.get(key)
        if hit is None:
            hit = _apply_overrides(self, [o for o in self.overrides if o.matches(*key)])
            self._resolved[key] = hit
        return hit

    def with_threshold(self, level: int, value: float) -> Rule:
        """A copy with one base threshold changed, validated like a freshly loaded rule."""
        if not any(lv.level == level for lv in self.levels):
            have = ", ".join(str(lv.level) for lv in self.levels)
            raise RuleError(self.file, self.id, f"levels.{level}",
                            f"rule has no level {level} (it has {have}); set one of those")
        levels = tuple(
            dataclasses.replace(lv, threshold=float(value)) if lv.level == level else lv
            for lv in self.levels
        )
        new = dataclasses.replace(self, levels=levels, _resolved={})
        _validate_resolved(new)
        return new


def _apply_overrides(rule: Rule, overrides: list[Override]) -> tuple[tuple[Level, ...], float]:
    levels = {lv.level: lv for lv in rule.levels}
    hysteresis = rule.hysteresis
    for o in overrides:
        for n, patch in o.levels.items():
            levels[n] = dataclasses.replace(levels[n], **patch)
        if o.hysteresis is not None:
            hysteresis = o.hysteresis
    return tuple(levels[n] for n in sorted(levels)), hysteresis


def validate_levels(levels: tuple[Level, ...]) -> str | None:
    """Why a level set is inconsistent, or None. Higher levels must need a worse value."""
    directions = {lv.compare[0] for lv in levels}
    if len(directions) > 1:
        return "levels mix '>' and '<' comparisons; all levels of a rule must compare the same way"
    for lo, hi in zip(levels, levels[1:]):
        if lo.compare[0] == ">" and hi.threshold < lo.threshold:
            return (f"level {hi.level} threshold {hi.threshold:g} is below level {lo.level} "
                    f"threshold {lo.threshold:g}; with '>' each higher level needs a higher threshold")
        if lo.compare[0] == "<" and hi.threshold > lo.threshold:
            return (f"level {hi.level} threshold {hi.threshold:g} is above level {lo.level} "
                    f"threshold {lo.threshold:g}; with '<' each higher level needs a lower threshold")
    return None


def _validate_resolved(rule: Rule) -> None:
    """Base levels and base + each override must stay ordered."""
    problem = validate_levels(rule.levels)
    if problem:
        raise RuleError(rule.file, rule.id, "levels", problem)
    for i, o in enumerate(rule.overrides):
        levels, _ = _apply_overrides(rule, [o])
        problem = validate_levels(levels)
        if problem:
            raise RuleError(rule.file, rule.id, f"overrides[{i}]", problem + " (after override)")
    # Overrides that apply together (a chemistry one and a model one on the same pack) must stay
    # ordered combined too: each (model, chemistry) any override names, and "any other".
    models = sorted({m for o in rule.overrides for m in (o.model or ())}) + ["\0other"]
    chemistries: list[int | None] = sorted({c for o in rule.overrides for c in (o.chemistry or ())}) + [None]
    for cabinet_model in models:
        for chemistry in chemistries:
            together = [i for i, o in enumerate(rule.overrides) if o.matches(cabinet_model, chemistry)]
            if len(together) < 2:
                continue
            levels, _ = _apply_overrides(rule, [rule.overrides[i] for i in together])
            problem = validate_levels(levels)
            if problem:
                where = ", ".join(f"overrides[{i}]" for i in together)
                raise RuleError(rule.file, rule.id, where, f"{problem} (when {where} apply together)")


class RuleSet(Mapping[str, Rule]):
    """Rules by id, in catalogue order."""

    def __init__(self, rules: list[Rule]) -> None:
        self._rules = {r.id: r for r in rules}

    def __getitem__(self, rule_id: str) -> Rule:
        return self._rules[rule_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def only(self, ids: list[str] | set[str]) -> RuleSet:
        """A subset (e.g. a temperature-only baseline for comparisons)."""
        missing = set(ids) - set(self._rules)
        if missing:
            raise KeyError(f"unknown rule ids: {sorted(missing)}")
        return RuleSet([r for r in self._rules.values() if r.id in ids])


def load_rules(path: str | Path = DEFAULT_CATALOGUE) -> RuleSet:
    """Load and fully validate a rule file. Raises RuleError naming file, rule and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(str(path), None, None, f"cannot read rule file ({exc.strerror})") from exc
    return parse_rules(text, file=path.name)


def parse_rules(text: str, *, file: str = "<rules>") -> RuleSet:
    """Parse rule YAML already in memory (``file`` is only used in error messages)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RuleError(file, None, None, f"not valid YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(file, None, "rules", "file must be a mapping with a 'rules:' list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["rules"]):
        rule = _parse_rule(raw, file, i)
        if rule.id in seen:
            raise RuleError(file, rule.id, "id", "duplicate rule id; ids must be unique")
        seen.add(rule.id)
        rules.append(rule)
    if not rules:
        raise RuleError(file, None, "rules", "no rules defined")
    return RuleSet(rules)


class _Ctx:
    """Carries file/rule names so every error says where it came from."""

    def __init__(self, file: str, rule: str) -> None:
        self.file, self.rule = file, rule

    def fail(self, key: str, reason: str) -> typing.NoReturn:
        raise RuleError(self.file, self.rule, key, reason)

    def number(self, key: str, value: Any) -> float:
        number = finite_number(value)
        if number is None:
            self.fail(key, f"{short_repr(value)} is not a finite number")
        return number

    def duration(self, key: str, value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(key, str(exc))


def _parse_rule(raw: Any, file: str, index: int) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(file, f"#{index + 1}", None, "each rule must be a mapping")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", rule_id):
        raise RuleError(file, f"#{index + 1}", "id",
                        f"{rule_id!r} is not a valid id; use lower_snake_case (it becomes alertname)")
    ctx = _Ctx(file, rule_id)
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        ctx.fail(sorted(unknown)[0], f"unknown key; allowed keys are {', '.join(sorted(_RULE_KEYS))}")
    for key in ("description", "diagnosis", "action", "source"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            ctx.fail(key, "required text is missing (P-5.4.7 needs a diagnosis and a suggested action)")
    for key in ("diagnosis", "action"):
        _check_template(ctx, key, raw[key])
    name = raw.get("name", raw["description"])
    if not isinstance(name, str) or not name.strip():
        ctx.fail("name", "must be a short display name (text), e.g. 'Battery over-temperature'; or leave it out")
    scope = raw.get("scope")
    if scope not in SCOPES:
        ctx.fail("scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
    kinds = _SCOPE_KINDS[scope]
    vehicle_command = raw.get("vehicle_command")
    if vehicle_command is not None:
        if vehicle_command not in VEHICLE_COMMANDS:
            ctx.fail("vehicle_command", f"{vehicle_command!r} is unknown; use one of {', '.join(sorted(VEHICLE_COMMANDS))}")
        if scope == "cabinet":
            ctx.fail("vehicle_command", "a cabinet rule cannot command a vehicle; use a vehicle or slot rule")

    raw_input = raw.get("input")
    fusion: tuple[FusionTerm, ...] = ()
    single: Input | None = None
    if isinstance(raw_input, dict) and "fusion" in raw_input:
        fusion = _parse_fusion(ctx, raw_input, kinds)
    else:
        single = _parse_input(ctx, "input", raw_input, kinds)

    compare = raw.get("compare", ">=")
    if compare not in COMPARES:
        ctx.fail("compare", f"{compare!r} is not one of {' '.join(COMPARES)}")
    default_for = ctx.duration("for", raw.get("for", 0))
    levels = _parse_levels(ctx, raw.get("levels"), compare, default_for)
    if scope == "vehicle" and any(lv.protective_action for lv in levels):
        ctx.fail("levels", "cabinet protective actions do not reach a vehicle; use vehicle_command: "
                           + " or ".join(sorted(VEHICLE_COMMANDS)))
    hysteresis = ctx.number("hysteresis", raw.get("hysteresis", 0))
    if hysteresis < 0:
        ctx.fail("hysteresis", "must be ≥ 0 (it is how far back past the threshold a value must go to clear)")
    when = None
    if raw.get("when") is not None:
        w = raw["when"]
        if not isinstance(w, dict) or "compare" not in w or "value" not in w:
            ctx.fail("when", "write when: {field: NAME, compare: '>', value: 0.5}")
        guard = _parse_input(ctx, "when", {k: v for k, v in w.items() if k not in ("compare", "value")}, kinds)
        if w["compare"] not in COMPARES:
            ctx.fail("when.compare", f"{w['compare']!r} is not one of {' '.join(COMPARES)}")
        when = (guard, w["compare"], ctx.number("when.value", w["value"]))

    overrides = tuple(
        _parse_override(ctx, i, o, levels, scope)
        for i, o in enumerate(raw.get("overrides") or [])
    )
    rule = Rule(
        id=rule_id,
        description=raw["description"].strip(),
        source=raw["source"].strip(),
        scope=scope,
        input=single,
        fusion=fusion,
        levels=levels,
        hysteresis=hysteresis,
        clear_for_s=ctx.duration("clear_for", raw.get("clear_for", 0)),
        when=when,
        overrides=overrides,
        diagnosis=raw["diagnosis"].strip(),
        action=raw["action"].strip(),
        unit=str(raw.get("unit", "")),
        file=file,
        name=name.strip(),
        vehicle_command=vehicle_command,
    )
    _check_read_only(ctx, rule)
    _validate_resolved(rule)
    return rule


def _check_read_only(ctx: _Ctx, rule: Rule) -> None:
    """P-3.3: a rule that reads fire-suppression state anywhere (its input, a fusion term or its
    ``when`` guard) may report it but never drive a protective action, neither in its base
    levels nor through an override."""
    fields = rule.read_only_fields
    if not fields:
        return
    why = (f"rules reading fire-suppression state ({', '.join(sorted(fields))}) are read-only (P-3.3); "
           "remove protective_action")
    if any(lv.protective_action for lv in rule.levels):
        ctx.fail("levels", why)
    for i, o in enumerate(rule.overrides):
        for n, patch in o.levels.items():
            if patch.get("protective_action"):
                ctx.fail(f"overrides[{i}].levels.{n}.protective_action", why)


def _check_template(ctx: _Ctx, key: str, text: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        ctx.fail(key, f"bad placeholder syntax ({exc}); use {{value}} etc., double braces for literals")
    unknown = names - _PLACEHOLDERS
    if unknown:
        ctx.fail(key, f"unknown placeholder {{{sorted(unknown)[0]}}}; "
                      f"available: {', '.join(sorted(_PLACEHOLDERS))}")


def _field(ctx: _Ctx, key: str, name: Any, kinds: dict[str, str], want: str) -> str:
    if not isinstance(name, str) or name not in kinds:
        scope = next(k for k, v in _SCOPE_KINDS.items() if v is kinds)
        ctx.fail(key, f"{name!r} is not a {scope} field of core.model; check spelling and scope")
    if kinds[name] != want:
        ctx.fail(key, f"field {name!r} is {kinds[name]}, this input needs a {want} field")
    return name


BASELINES = {
    "cabinet_min": "the lowest value of the same field among the cabinet's other slots (absolute when none reports)",
    "cabinet_temperature_c": "the cabinet's temperature (no decision when the cabinet reports none)",
}
"""What a slot value may be measured against (``minus:``): context from the same cabinet poll."""
_BASELINE_SHORT = {"cabinet_min": "lowest other slot", "cabinet_temperature_c": "cabinet temperature"}


def _parse_input(ctx: _Ctx, key: str, raw: Any, kinds: dict[str, str]) -> Input:
    if not isinstance(raw, dict):
        ctx.fail(key, f"must be a mapping with one of: {', '.join(INPUT_KINDS)}")
    found = [k for k in INPUT_KINDS if k in raw]
    if len(found) != 1:
        ctx.fail(key, f"needs exactly one of {', '.join(INPUT_KINDS[:-1])} (found {found or 'none'})")
    kind = found[0]
    extra = set(raw) - {kind, "window", "mask", "direction", "per", "minus"}
    if extra:
        ctx.fail(f"{key}.{sorted(extra)[0]}", "unknown input option")
    sub = f"{key}.{kind}"
    if kind == "field":
        per = raw.get("per")
        if per is not None:
            per = _field(ctx, f"{key}.per", per, kinds, "number")
        minus = raw.get("minus")
        if minus is not None and (minus not in BASELINES or kinds is not SLOT_FIELD_KINDS or per is not None):
            ctx.fail(f"{key}.minus", f"{minus!r} is not a baseline of a slot field; use one of {sorted(BASELINES)} "
                                     "(without per:)")
        return Input("field", (_field(ctx, sub, raw[kind], kinds, "number"),), per=per, minus=minus)
    if "minus" in raw:
        ctx.fail(f"{key}.minus", "only a field input takes a baseline (minus:)")
    if kind == "rate_of":
        window = ctx.duration(f"{key}.window", raw.get("window", 120))
        if window <= 0:
            ctx.fail(f"{key}.window", "rate window must be > 0")
        return Input("rate_of", (_field(ctx, sub, raw[kind], kinds, "number"),), window_s=window)
    if kind == "delta":
        pair = raw[kind]
        if not isinstance(pair, list) or len(pair) != 2:
            ctx.fail(sub, "write delta: [minuend_field, subtrahend_field]")
        return Input("delta", tuple(_field(ctx, sub, f, kinds, "number") for f in pair))
    if kind == "jump":
        direction = raw.get("direction", "any")
        if direction not in ("any", "up"):
            ctx.fail(f"{key}.direction", "must be 'any' (absolute change) or 'up' (counter increase)")
        return Input("jump", (_field(ctx, sub, raw[kind], kinds, "number"),), up_only=direction == "up")
    if kind == "bool":
        return Input("bool", (_field(ctx, sub, raw[kind], kinds, "bool"),))
    if kind == "lost":
        # Sensor health: a safety sensor that went silent blinds the rules that read it.
        return Input(kind, (_field(ctx, sub, raw[kind], kinds, "number"),))
    if kind == "flag":
        name = raw[kind]
        if name not in FLAG_TYPES or name not in kinds:
            ctx.fail(sub, f"{name!r} is not a bitmask field of this scope "
                          f"({', '.join(f for f in FLAG_TYPES if f in kinds)})")
        flag_type = FLAG_TYPES[name]
        names = raw.get("mask", "any")
        if names == "any":
            mask = sum(int(m) for m in flag_type)
        else:
            if not isinstance(names, list) or not names:
                ctx.fail(f"{key}.mask", "write mask: [NAME, ...] or mask: any")
            mask = 0
            for n in names:
                if not isinstance(n, str) or n.upper() not in flag_type.__members__:
                    ctx.fail(f"{key}.mask", f"{n!r} is not a {flag_type.__name__} bit; "
                                            f"known: {', '.join(flag_type.__members__)}")
                mask |= int(flag_type[n.upper()])
        return Input("flag", (name,), mask=mask)
    ctx.fail(key, "fusion is only allowed as the rule's top-level input")


def _parse_fusion(ctx: _Ctx, raw: dict, kinds: dict[str, str]) -> tuple[FusionTerm, ...]:
    terms_raw = raw["fusion"]
    if set(raw) != {"fusion"} or not isinstance(terms_raw, list) or len(terms_raw) < 2:
        ctx.fail("input.fusion", "write fusion: [term, term, ...] with at least two evidence terms")
    terms = []
    for i, t in enumerate(terms_raw):
        key = f"input.fusion[{i}]"
        if not isinstance(t, dict) or set(t) - {"input", "start", "full", "weight", "hold"}:
            ctx.fail(key, "term keys are input, start, full, weight, hold")
        for k in ("input", "start", "full", "weight"):
            if k not in t:
                ctx.fail(f"{key}.{k}", "required")
        inp = _parse_input(ctx, f"{key}.input", t["input"], kinds)
        start, full = ctx.number(f"{key}.start", t["start"]), ctx.number(f"{key}.full", t["full"])
        weight = ctx.number(f"{key}.weight", t["weight"])
        if start == full:
            ctx.fail(f"{key}.full", "must differ from start (strength ramps from start to full)")
        if weight <= 0:
            ctx.fail(f"{key}.weight", "must be > 0")
        terms.append(FusionTerm(inp, start, full, weight, ctx.duration(f"{key}.hold", t.get("hold", 0))))
    return tuple(terms)


def _parse_levels(ctx: _Ctx, raw: Any, compare: str, default_for: float) -> tuple[Level, ...]:
    if not isinstance(raw, dict) or not raw:
        ctx.fail("levels", "write levels: {1: threshold, 2: threshold, 3: threshold} (any non-empty subset)")
    levels = []
    for n, spec in raw.items():
        if n not in (1, 2, 3):
            ctx.fail(f"levels.{n}", "levels are 1, 2 and 3 (GB/T 32960 scale)")
        levels.append(_parse_level(ctx, f"levels.{n}", n, spec, Level(n, math.nan, compare, default_for)))
    return tuple(sorted(levels, key=lambda lv: lv.level))


def _level_patch(ctx: _Ctx, key: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        spec = {"value": spec}
    extra = set(spec) - {"value", "compare", "for", "protective_action"}
    if extra:
        ctx.fail(f"{key}.{sorted(extra)[0]}", "level keys are value, compare, for, protective_action")
    patch: dict[str, Any] = {}
    if "value" in spec:
        patch["threshold"] = ctx.number(f"{key}.value", spec["value"])
    if "compare" in spec:
        if spec["compare"] not in COMPARES:
            ctx.fail(f"{key}.compare", f"{spec['compare']!r} is not one of {' '.join(COMPARES)}")
        patch["compare"] = spec["compare"]
    if "for" in spec:
        patch["for_s"] = ctx.duration(f"{key}.for", spec["for"])
    if "protective_action" in spec:
        action = spec["protective_action"]
        if action is not None and action not in PROTECTIVE_ACTIONS:
            ctx.fail(f"{key}.protective_action",
                     f"{action!r} is unknown; use one of {', '.join(sorted(PROTECTIVE_ACTIONS))}")
        patch["protective_action"] = action
    return patch


def _parse_level(ctx: _Ctx, key: str, n: int, spec: Any, base: Level) -> Level:
    patch = _level_patch(ctx, key, spec)
    if "threshold" not in patch:
        ctx.fail(f"{key}.value", "threshold value is required")
    return dataclasses.replace(base, **patch)


def _parse_override(ctx: _Ctx, i: int, raw: Any, base: tuple[Level, ...], scope: str) -> Override:
    key = f"overrides[{i}]"
    if not isinstance(raw, dict) or set(raw) - {"chemistry", "model", "levels", "hysteresis"}:
        ctx.fail(key, "override keys are chemistry, model, levels, hysteresis")
    if "chemistry" not in raw and "model" not in raw:
        ctx.fail(key, "an override needs chemistry: [...] and/or model: [...] to say where it applies")
    chem = None
    if "chemistry" in raw:
        if scope != "slot":
            ctx.fail(f"{key}.chemistry", "chemistry overrides only apply to slot rules")
        names = raw["chemistry"] if isinstance(raw["chemistry"], list) else [raw["chemistry"]]
        chem_set = set()
        for n in names:
            if not isinstance(n, str) or n.upper() not in Chemistry.__members__:
                ctx.fail(f"{key}.chemistry", f"{n!r} is not a Chemistry; known: {', '.join(Chemistry.__members__)}")
            chem_set.add(int(Chemistry[n.upper()]))
        chem = frozenset(chem_set)
    models = None
    if "model" in raw:
        names = raw["model"] if isinstance(raw["model"], list) else [raw["model"]]
        if not all(isinstance(n, str) and n for n in names):
            ctx.fail(f"{key}.model", "model must be a cabinet model name or a list of them")
        models = frozenset(names)
    levels_raw = raw.get("levels") or {}
    if not isinstance(levels_raw, dict):
        ctx.fail(f"{key}.levels", "write levels: {1: value, ...}")
    have = {lv.level for lv in base}
    patches = {}
    for n, spec in levels_raw.items():
        if n not in have:
            ctx.fail(f"{key}.levels.{n}", f"base rule has no level {n}; overrides can only change existing levels")
        patches[n] = _level_patch(ctx, f"{key}.levels.{n}", spec)
    hysteresis = None
    if "hysteresis" in raw:
        hysteresis = ctx.number(f"{key}.hysteresis", raw["hysteresis"])
        if hysteresis < 0:
            ctx.fail(f"{key}.hysteresis", "must be ≥ 0")
    return Override(chem, models, patches, hysteresis)
