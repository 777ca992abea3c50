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
import gettext
import logging
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LANGUAGE", "DOMAIN", "LANGUAGES", "LOCALE_DIR", "N_", "AlertTexts", "fill", "for_level",
           "normalize_language"]

log = logging.getLogger(__name__)

# "Level 2: stop charging. Level 3: cut off." (and its translation "二级：…三级：…"): one part per level.
_LEVEL_MARK = re.compile(r"(?:\bLevel ([1-3]):|([一二三])级：)\s*")
_LEVEL_WORDS = {"一": 1, "二": 2, "三": 3}

#: gettext domain: one catalogue for the engine and the notifier.
DOMAIN = "cascade"
#: ``locale/`` beside the packages (like ``profiles/``; the project is installed in place).
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
#: The languages Cascade ships; the first is the default. English is the source language.
LANGUAGES = ("zh_CN", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]
_ALIASES = {"zh": "zh_CN", "zh_cn": "zh_CN", "zh-cn": "zh_CN", "zh_hans": "zh_CN", "zh-hans": "zh_CN",
            "zh_hans_cn": "zh_CN", "en": "en", "en_us": "en", "en-us": "en", "en_gb": "en", "en-gb": "en"}


def normalize_language(value: Any) -> str:
    """``zh_CN`` or ``en`` for the usual spellings (``zh``, ``zh-CN``, ``en_US``); ValueError otherwise."""
    found = _ALIASES.get(str(value).strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"unsupported language {value!r}; use one of {', '.join(LANGUAGES)}")
    return found


@functools.cache
def _translations(language: str) -> gettext.NullTranslations:
    # fallback: English is the source text, so a missing en catalogue changes nothing.
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[language], fallback=language == "en")


def N_(msgid: str) -> str:
    """Marks ``msgid`` for the catalogue where it is translated later (``texts.tr(msgid)``)."""
    return msgid


def fill(template: str, source: str, values: Mapping[str, Any]) -> str:
    """``template`` (a translation) filled with ``values``; the English ``source`` when the translation
    does not fit them; ``source`` unfilled when neither does. Never raises."""
    for text in (template, source):
        try:
            return text.format_map(values)
        except Exception:  # noqa: BLE001 - any bad placeholder or format spec: try the next text
            continue
    return source


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
