"""Alert texts in the operators' language: Simplified Chinese by default, English by option.

Every operator-, on-call- and regulator-facing text of the warning engine (rule names, diagnoses,
suggested actions, the summary line) is written in English in the source (``catalogue.yaml``,
``engine.py``) and translated through one GNU gettext catalogue, ``locale/<lang>/LC_MESSAGES/cascade.po``,
which the notifier shares (``notifier/i18n.py``). ``python -m alerting.catalogue_i18n --write``
extracts the texts, merges them into the ``.po`` files and compiles the ``.mo`` files that are read
here with the standard library's :mod:`gettext`.

Rendering never raises: a translation whose placeholders do not fit falls back to the English text,
and an English text that does not fit either is shown raw (the warning path must not fail on a text).

    >>> texts = AlertTexts("zh_CN")
    >>> texts.tr("L{level} {name}{reading} at {where}", level=3, name="电池温度过高", reading=" 85.2 °C",
    ...          where="site-01/C0003 5号仓")
    'L3 电池温度过高 85.2 °C（site-01/C0003 5号仓）'
"""

from __future__ import annotations

import functools
import logging
import re
import string
from collections.abc import Mapping
from typing import Any

from core.i18n import DEFAULT_LANGUAGE, DOMAIN, LANGUAGES, LOCALE_DIR, fill, normalize_language, translations

__all__ = ["DEFAULT_LANGUAGE", "DOMAIN", "LANGUAGES", "LOCALE_DIR", "N_", "AlertTexts", "fill", "for_level",
           "normalize_language"]

log = logging.getLogger(__name__)

# "Level 2: stop charging. Level 3: cut off." (and its translation "二级：…三级：…"): one part per level.
_LEVEL_MARK = re.compile(r"(?:\bLevel ([1-3]):|([一二三])级：)\s*")
_LEVEL_WORDS = {"一": 1, "二": 2, "三": 3}

_translations = translations


def N_(msgid: str) -> str:
    """Marks ``msgid`` for the catalogue where it is translated later (``texts.tr(msgid)``)."""
    return msgid


class AlertTexts:
    """The alert texts in one language.

    ``tr`` and ``ptr`` (with a gettext context) translate a message and fill its placeholders, the
    way :func:`fill` does. ``rule_text`` translates a rule's ``name``, ``description``, ``diagnosis``
    or ``action``; ``reading`` formats a rule's input value with its unit.
    """

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = normalize_language(language)
        self._catalog = _translations(self.language)

    def tr(self, msgid: str, /, **values: Any) -> str:
        return fill(self._catalog.gettext(msgid), msgid, values)

    def ptr(self, context: str, msgid: str, /, **values: Any) -> str:
        return fill(self._catalog.pgettext(context, msgid), msgid, values)

    def rule_text(self, text: str, values: Mapping[str, Any] | None = None) -> str:
        """A rule text (catalogue.yaml) in this language, filled with ``values`` when given."""
        translated = self._catalog.gettext(text)
        return translated if values is None else fill(translated, text, values)

    def unit(self, unit: str) -> str:
        return self._catalog.pgettext("unit", unit) if unit else ""

    def reading(self, value: Any, unit: str, diagnosis: str) -> str:
        """``85.2 °C``: the value with the precision its diagnosis uses for it, and the unit.
        Empty for a rule without a unit (a flag, a detector) or a value that is not a number."""
        if not unit or isinstance(value, bool) or not isinstance(value, (int, float)):
            return ""
        try:
            number = format(value, _value_spec(diagnosis))
        except (ValueError, TypeError):
            number = f"{value:g}"
        return f"{number} {self.unit(unit)}"


def for_level(text: str, level: int) -> str:
    """The part of an action written per level ("Level 2: … Level 3: …") that applies to ``level``;
    the whole text when it has no part for that level. A page says what to do now, once."""
    marks = list(_LEVEL_MARK.finditer(text))
    for i, mark in enumerate(marks):
        found = int(mark.group(1)) if mark.group(1) else _LEVEL_WORDS[mark.group(2)]
        if found == level:
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            part = text[mark.end():end].strip()
            return part[:1].upper() + part[1:] if part else text
    return text


@functools.lru_cache(maxsize=512)
def _value_spec(template: str) -> str:
    """The format spec of the first ``{value:...}`` in ``template`` (``.1f``), else ``g``."""
    try:
        for _, name, spec, _ in string.Formatter().parse(template):
            if name == "value" and spec:
                return spec
    except ValueError:
        pass
    return "g"
