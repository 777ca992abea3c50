"""One validation approach for every file Cascade reads: pydantic models, Cascade's error messages.

A config section is a :class:`Model` (pydantic v2: typed, ``extra="forbid"``, immutable). Parse it
with :func:`validate`, which turns pydantic's first error into an :class:`~core.errors.InputError`
naming the file, the dotted key and what to do next, the same one-line shape every Cascade error has.

    >>> class Poll(Model):
    ...     jitter: float = Field(0.1, ge=0, lt=1, description="a fraction of the interval, e.g. 0.1")
    >>> validate(Poll, {"jitter": 2}, "run.yaml", key="poll").jitter
    Traceback (most recent call last):
    ...
    core.errors.InputError: run.yaml: poll.jitter: 2 is not less than 1. Fix: a fraction of the interval, e.g. 0.1

A field's ``description`` is its fix (and its line in generated reference docs); a validator that
raises ``ValueError("problem. Fix: what to do")`` sets both parts itself. Keys are written the way
the file reads: ``cabinets[0].port`` for a list item, ``actions.rules.thermal_runaway.2`` for a
mapping key (also an integer one), and values the way YAML writes them (``true``, ``null``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.errors import InputError

__all__ = ["Bool", "Field", "Float", "Int", "Model", "Shown", "ValidationError", "default_text", "format_key",
           "one_line", "short_value", "shown_default", "type_text", "validate", "validation_error", "yaml_text"]

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=InputError)


def _int_not_bool(value: Any) -> Any:
    # YAML reads `yes`/`true` as booleans, and Python's bool is an int: a number field must say no.
    if isinstance(value, bool):
        raise ValueError(f"{short_value(value)} is a boolean, not an integer")
    return value


def _float_not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{short_value(value)} is a boolean, not a number")
    return value


def _bool_or_text(value: Any) -> Any:
    # `${FLAG:-true}` arrives as text; pydantic's own lax bool would also take 1, "yes", "on", "y".
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{short_value(value)} is not true or false")


Int = Annotated[int, BeforeValidator(_int_not_bool)]
"""An integer; ``true`` is refused, ``"8086"`` (from ``${PORT}``) is accepted."""
Float = Annotated[float, BeforeValidator(_float_not_bool), AllowInfNan(False)]
"""A finite number; ``true``, ``.nan`` and ``.inf`` are refused, ``"0.5"`` (from ``${X}``) is accepted."""
Bool = Annotated[bool, BeforeValidator(_bool_or_text)]
"""``true`` or ``false``, also as text (from ``${FLAG}``); ``1``, ``"yes"`` and ``"on"`` are refused."""


class Model(BaseModel):
    """Base of config sections: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


def _is_tag(part: str) -> bool:
    """pydantic's own loc entries (union members, validators, ``[key]``), not keys of the file."""
    return "[" in part or part.startswith("function-")


def format_key(prefix: str, loc: Sequence[int | str], model: type[BaseModel] | None = None) -> str:
    """``cabinets[0].port`` from ``("cabinets", 0, "port")``; pydantic's internal tags dropped.

    With ``model`` the types decide: an integer key of a mapping is ``.2``, a list index ``[2]``.
    """
    if model is not None:
        return _join(prefix, _walk(model, loc)[0])
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not _is_tag(part):
            parts.append(f".{part}")
    return _join(prefix, parts)


def _join(prefix: str, parts: Sequence[str]) -> str:
    key = prefix + "".join(parts)
    return key.removeprefix(".") or "(file)"


def _unwrap(tp: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: type[BaseModel], loc: Sequence[int | str]
          ) -> tuple[list[str], FieldInfo | None, Mapping[str, FieldInfo]]:
    """Along ``loc``: the key parts, the last model field passed (its description is the fix of
    anything below it) and the fields of the innermost model (the keys allowed there)."""
    parts: list[str] = []
    info: FieldInfo | None = None
    fields: Mapping[str, FieldInfo] = model.model_fields
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if _is_model(tp):
            fields = tp.model_fields
            parts.append(f".{part!r}" if part == "" else f".{part}")
            found = fields.get(part) if isinstance(part, str) else None
            if found is None:  # an unknown key: nothing below it is typed
                tp = None
            else:
                info, tp = found, found.annotation
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            if part == "[key]":
                continue
            parts.append(f".{part!r}" if part == "" else f".{part}")
            args = get_args(tp)
            tp = args[1] if len(args) == 2 else None
        elif isinstance(origin, type) and issubclass(origin, (Sequence, AbstractSet)) and not issubclass(origin, str):
            parts.append(f"[{part}]")
            args = get_args(tp)
            tp = args[0] if args else None
        elif isinstance(part, int):
            parts.append(f"[{part}]")
        elif not _is_tag(part) and tp is None:
            parts.append(f".{part}")
        # else: a scalar's loc continues only with pydantic's tags
    if _is_model(_unwrap(tp)):  # ``loc`` ends at a section: its keys are the ones allowed there
        fields = _unwrap(tp).model_fields
    return parts, info, fields


_UNKNOWN = ("extra_forbidden", "invalid_key")
_PROBLEMS = {
    "int_type": "is not an integer", "int_parsing": "is not an integer", "int_from_float": "is not an integer",
    "float_type": "is not a number", "float_parsing": "is not a number", "finite_number": "is not a finite number",
    "string_type": "is not text", "bool_type": "is not true or false", "bool_parsing": "is not true or false",
    "dict_type": "is not a mapping", "model_type": "is not a mapping", "model_attributes_type": "is not a mapping",
    "list_type": "is not a list", "tuple_type": "is not a list", "set_type": "is not a list",
}


def short_value(value: Any, limit: int = 60) -> str:
    """``value`` as YAML writes it (``true``, ``null``), otherwise its repr, cut to ``limit``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    try:
        text = repr(value)
    except ValueError:
        return "a very large integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key_fix(name: Any, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), allowed, n=1) if allowed else []
    hint = f"did you mean {close[0]!r}? Otherwise " if close else ""
    return f"{hint}remove it or use one of {sorted(allowed)}"


def validation_error(err: ValidationError, model: type[BaseModel], source: str | Path, key: str = "",
                     error: type[E] = InputError) -> E:  # type: ignore[assignment]
    """The first problem of ``err`` as one ``error`` (an :class:`InputError`) with file, key and fix.

    An unknown key is reported before other problems: a misspelt key often explains a missing one.
    """
    errors = err.errors(include_url=False)
    first = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    loc = tuple(first["loc"])
    kind = first["type"]
    parts, info, fields = _walk(model, loc)
    where = _join(key, parts)
    fix = info.description if info is not None else None
    if kind in _UNKNOWN:
        allowed = sorted(_walk(model, loc[:-1])[2])
        return error(source, where, "unknown key", _unknown_key_fix(loc[-1] if loc else "", allowed))
    if kind == "missing":
        return error(source, where, "missing", fix or "add this key")
    message = str(first["msg"])
    if kind in ("value_error", "assertion_error"):
        message = message.split(", ", 1)[1] if ", " in message else message
        if ". Fix: " in message:
            problem, _, own_fix = message.partition(". Fix: ")
            return error(source, where, problem, own_fix)
        return error(source, where, message, fix or "see the reference docs for this key")
    value = short_value(first.get("input"))
    ctx = first.get("ctx") or {}
    if kind in _PROBLEMS:
        problem = f"{value} {_PROBLEMS[kind]}"
    elif kind == "string_too_short" and ctx.get("min_length") == 1:
        problem = f"{value} is empty"
    elif message:
        problem = f"{value} {message[0].lower()}{message[1:]}"
        problem = problem.replace(" input should be ", " is not ").replace(" should be ", " is not ")
    else:
        problem = f"{value} is not valid"
    return error(source, where, problem, fix or "see the reference docs for this key")


def validate(model: type[M], data: Any, source: str | Path, *, key: str = "",
             error: type[InputError] = InputError) -> M:
    """``model`` validated from ``data`` (parsed YAML/JSON); raises ``error`` (an :class:`InputError`,
    e.g. a caller's own subclass) on the first problem, naming ``source`` and the key under ``key``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, model, source, key, error) from None


# -- generated key references (docs tables built from the models) -----------------------------------

@dataclass(frozen=True)
class Shown:
    """``Annotated[..., Shown("a port")]``: how a generated key reference names a type (pydantic ignores it)."""

    name: str


def shown_default(default: str) -> dict[str, Any]:
    """``json_schema_extra`` for a default a key reference writes in words (``"the profile's"``)."""
    return {"shown_default": default}


def one_line(text: str) -> str:
    """Line breaks (a YAML parser's report, a key or value a message quotes) written as ``\\n``."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


_SCALARS = {int: "integer", float: "number", str: "text", bool: "true/false", type(None): "null"}


def _range(metadata: list[Any]) -> str:
    bounds: dict[type, Any] = {}
    for m in metadata:
        for kind, attr in ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt")):
            if isinstance(m, kind):
                bounds[kind] = getattr(m, attr)
    if Ge in bounds and Le in bounds:
        return f" {bounds[Ge]}..{bounds[Le]}"
    text = ", ".join(f"{sign} {bounds[kind]}" for kind, sign in ((Gt, ">"), (Ge, ">="), (Lt, "<"), (Le, "<="))
                     if kind in bounds)
    return f" {text}" if text else ""


def type_text(tp: Any, metadata: list[Any] | None = None) -> str:
    """A field's type in words for a key reference: ``integer 1..65535``, ``list of text``, ``mapping``."""
    metadata = list(metadata or [])
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return type_text(args[0], [*args[1:], *metadata])
    shown = [m.name for m in metadata if isinstance(m, Shown)]
    if shown:  # the outermost: a type built on another names itself
        return shown[-1] + _range(metadata)
    if origin in (Union, UnionType):
        return " or ".join(type_text(a, metadata if a is not type(None) else []) for a in args)
    if origin is Literal:
        names = [f"`{a}`" for a in args]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp))) + _range(metadata)


def yaml_text(value: Any) -> str:
    """``value`` as YAML writes it: ``null``, ``true``, ``[a, b]``, ``{k: v}``; ``""`` for empty text."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(info: FieldInfo) -> str:
    """A field's default for a key reference: in words when the model says so, else as YAML."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if info.default is PydanticUndefined:
        return "(required)"
    return f"`{yaml_text(info.default)}`"
