"""Message templates: ``{{labels.site}}``-style placeholders filled from one alert.

Deliberately tiny (no logic, no filters): provider templates are written by operators, and a
template that cannot fail at render time cannot lose a critical page. Names are checked when the
config loads; a label or annotation the alert does not carry (``slot`` on a cabinet-level alert)
renders as an empty string. ``{{message.<name>}}`` are the ready-made texts in the recipient's
language (notifier/messages.py: ``message.sms``, ``message.voice``, ...).

    >>> t = compile_template("{{labels.site}}/{{labels.cabinet}} slot {{labels.slot}}")
    >>> t.render({"labels": {"site": "s1", "cabinet": "c7"}})
    's1/c7 slot '
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import CascadeError

from .messages import MESSAGE_FIELDS

__all__ = ["PLACEHOLDERS", "Template", "TemplateError", "compile_template", "render_tree"]

PLACEHOLDERS = ("recipient", "receiver", "status", "fingerprint", "starts_at", "ends_at", "generator_url",
                "channel", "target", "labels.<name>", "annotations.<name>",
                *(f"message.{name}" for name in MESSAGE_FIELDS))
_PLAIN = frozenset(p for p in PLACEHOLDERS if "." not in p)
_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*\}\}")


class TemplateError(CascadeError):
    """An unknown placeholder name."""


@dataclass(frozen=True)
class Template:
    source: str
    _parts: tuple[str | tuple[str, ...], ...]

    def render(self, context: Mapping[str, Any], escape: Callable[[str], str] = str) -> str:
        """Fill the placeholders from ``context``; ``escape`` is applied to every substituted value."""
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: Any = context
            for name in part:
                value = value.get(name, "") if isinstance(value, Mapping) else ""
            out.append(escape("" if value is None else str(value)))
        return "".join(out)


def compile_template(text: str) -> Template:
    """Parse ``text``; raise TemplateError naming the first unknown placeholder."""
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for match in _FIELD.finditer(text):
        name = match.group(1)
        path = tuple(name.split("."))
        if not (name in _PLAIN or (len(path) == 2 and path[0] in ("labels", "annotations"))
                or (len(path) == 2 and path[0] == "message" and path[1] in MESSAGE_FIELDS)):
            raise TemplateError(f"unknown placeholder {{{{{name}}}}} (known: {', '.join(PLACEHOLDERS)})")
        parts.append(text[pos:match.start()])
        parts.append(path)
        pos = match.end()
    parts.append(text[pos:])
    if "{{" in text[pos:] or any("{{" in p for p in parts if isinstance(p, str)):
        raise TemplateError("malformed placeholder: write {{labels.name}}, {{annotations.name}} or {{recipient}}")
    return Template(text, tuple(p for p in parts if p != ""))


def render_tree(tree: Any, context: Mapping[str, Any]) -> Any:
    """Render every Template inside nested dicts/lists (structured JSON or form bodies)."""
    if isinstance(tree, Template):
        return tree.render(context)
    if isinstance(tree, dict):
        return {k: render_tree(v, context) for k, v in tree.items()}
    if isinstance(tree, list):
        return [render_tree(v, context) for v in tree]
    return tree
