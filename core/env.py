"""One ``${NAME}`` / ``${NAME:-default}`` expander for every config file, so secrets stay out of files.

    >>> expand_env({"url": "http://${HOST:-127.0.0.1}:8086"}, {})
    {'url': 'http://127.0.0.1:8086'}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ENV_REF", "MissingEnv", "expand_env", "expand_text"]

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingEnv(LookupError):
    """A ``${NAME}`` without a default whose variable is not set; ``key`` is where it was written."""

    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key
        super().__init__(f"environment variable {name} is not set")


def expand_text(text: str, env: Mapping[str, str], key: str = "") -> str:
    """``text`` with every reference replaced; raises :class:`MissingEnv` for an unset one."""
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise MissingEnv(name, key)
    return ENV_REF.sub(substitute, text) if "${" in text else text


def expand_env(value: Any, env: Mapping[str, str], key: str = "",
               on_missing: Callable[[MissingEnv], Exception] | None = None) -> Any:
    """Expand references in every string of a parsed YAML/JSON tree; keys are dotted paths.

    ``on_missing`` turns a :class:`MissingEnv` into the caller's own error (file, key, fix).
    """
    try:
        return _walk(value, env, key)
    except MissingEnv as err:
        if on_missing is None:
            raise
        raise on_missing(err) from None


def _walk(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, env, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return expand_text(value, env, key)
    return value
