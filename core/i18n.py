"""The one message catalogue's loader, shared by the warning engine's alert texts (alerting/i18n.py)
and the notifier's messages (notifier/i18n.py): ``locale/<lang>/LC_MESSAGES/cascade.po``, maintained
with ``python -m alerting.catalogue_i18n``. English is the source language.

Filling a text never raises: a translation whose placeholders do not fit falls back to the English
text, and that to the raw text; a page must go out whatever a translator wrote.

    >>> fill("{name} 超限", "{name} over", {"name": "SOC"})
    'SOC 超限'
    >>> fill("{nom} 超限", "{name} over", {"name": "SOC"})
    'SOC over'
"""

from __future__ import annotations

import functools
import gettext
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LANGUAGE", "DOMAIN", "LANGUAGES", "LOCALE_DIR", "fill", "normalize_language", "translations"]

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
    found = _ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"unsupported language {value!r}; use one of {', '.join(LANGUAGES)}")
    return found


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalogue of ``language`` (English, the source text, needs none)."""
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[language], fallback=language == "en")


def fill(template: str, source: str, values: Mapping[str, Any]) -> str:
    """``template`` (a translation) filled with ``values``; the English ``source`` when the translation
    does not fit them; ``source`` unfilled when neither does. Never raises."""
    for text in (template, source):
        try:
            return text.format_map(values)
        except Exception:  # noqa: BLE001 - any bad placeholder or format spec: try the next text
            continue
    return source
