"""The notifier's texts in the recipient's language: Simplified Chinese by default, English by option.

The texts are English in the source (``tr("...")`` calls in notifier/messages.py) and translated
through the same gettext catalogue as the warning engine's alert texts,
``locale/<lang>/LC_MESSAGES/cascade.po`` (maintained with ``python -m alerting.catalogue_i18n``).
The notifier is deployed alone and imports only the ground floor, so the few lines that load the
catalogue live here too (alerting/i18n.py has the same for the engine).

Filling a text never raises: a translation whose placeholders do not fit falls back to the English
text, and that to the raw text; a page must go out whatever a translator wrote.
"""

from __future__ import annotations

import functools
import gettext
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Texts", "normalize_language"]

DOMAIN = "cascade"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
#: Languages with a catalogue; the first is the default. English is the source language.
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
def _translations(language: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[language], fallback=language == "en")


def _fill(template: str, source: str, values: Mapping[str, Any]) -> str:
    for text in (template, source):
        try:
            return text.format_map(values)
        except Exception:  # noqa: BLE001 - any bad placeholder or format spec: try the next text
            continue
    return source


class Texts:
    """Texts in one language: ``tr(msgid, **values)``, ``ptr(context, msgid, **values)``.

        >>> Texts("zh_CN").ptr("level", "Level 3 critical")
        '三级预警'
    """

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = normalize_language(language)
        self._catalog = _translations(self.language)

    def tr(self, msgid: str, /, **values: Any) -> str:
        return _fill(self._catalog.gettext(msgid), msgid, values)

    def ptr(self, context: str, msgid: str, /, **values: Any) -> str:
        return _fill(self._catalog.pgettext(context, msgid), msgid, values)


@functools.cache
def texts(language: str) -> Texts:
    """The (shared, immutable) texts of a normalized language."""
    return Texts(language)
