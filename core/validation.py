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
raises ``ValueError("problem. Fix: what to do")`` sets both parts itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from core.errors import InputError

__all__ = ["Field", "Float", "Int", "Model", "ValidationError", "format_key", "validate", "validation_error"]

M = TypeVar("M", bound=BaseModel)


def _not_bool(value: Any) -> Any:
    # YAML reads `yes`/`true` as booleans, and Python's bool is an int: a number field must say no.
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
"""An integer; ``true`` is refused, ``"8086"`` (from ``${PORT}``) is accepted."""
Float = Annotated[float, BeforeValidator(_not_bool)]
"""A number; ``true`` is refused, ``"0.5"`` (from ``${X}``) is accepted."""


class Model(BaseModel):
    """Base of config sections: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


def format_key(prefix: str, loc: Sequence[int | str]) -> str:
    """``cabinets[0].port`` from ``("cabinets", 0, "port")``; pydantic's internal tags dropped."""
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif "[" in part or part.startswith("function-"):  # union member / validator tags, not keys
            continue
        else:
            key = f"{key}.{part}" if key else part
    return key or "(file)"


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:
        return "a very large integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> Mapping[str, Any] | None:
    """The model fields of the (sub)model at ``loc``, to list the allowed keys."""
    fields: Mapping[str, Any] = model.model_fields
    for part in loc:
        if isinstance(part, int):
            continue
        info = fields.get(part)
        if info is None:
            return fields
        annotation = info.annotation
        sub = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return fields
        fields = sub.model_fields
    return fields


def _description(model: type[BaseModel], loc: Sequence[int | str]) -> str | None:
    fields: Mapping[str, Any] = model.model_fields
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        info = fields.get(part)
        if info is None:
            return None
        annotation = info.annotation
        sub = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        fields = sub.model_fields if sub is not None else {}
    return None if info is None else info.description


def validation_error(err: ValidationError, model: type[BaseModel], source: str | Path, key: str = "") -> InputError:
    """The first problem of ``err`` as one :class:`InputError` with file, key and fix."""
    first = err.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    kind = first["type"]
    where = format_key(key, loc)
    fix = _description(model, loc)
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1]) or {}
        return InputError(source, where, "unknown key", f"remove it or use one of {sorted(allowed)}")
    if kind == "missing":
        return InputError(source, where, "missing", fix or "add this key")
    message = str(first["msg"])
    if kind in ("value_error", "assertion_error"):
        message = message.split(", ", 1)[1] if ", " in message else message
        if ". Fix: " in message:
            problem, _, own_fix = message.partition(". Fix: ")
            return InputError(source, where, problem, own_fix)
        return InputError(source, where, message, fix or "see the reference docs for this key")
    value = first.get("input")
    problem = f"{_short(value)} {message[0].lower()}{message[1:]}" if message else f"{_short(value)} is not valid"
    problem = problem.replace(" input should be ", " is not ").replace(" should be ", " is not ")
    return InputError(source, where, problem, fix or "see the reference docs for this key")


def validate(model: type[M], data: Any, source: str | Path, *, key: str = "") -> M:
    """``model`` validated from ``data`` (parsed YAML/JSON); raises :class:`InputError` on the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, model, source, key) from None
