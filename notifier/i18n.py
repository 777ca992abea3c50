"""The notifier's texts in the recipient's language: Simplified Chinese by default, English by option.

The texts are English in the source (``tr("...")`` calls in notifier/messages.py) and translated
through the same gettext catalogue as the warning engine's alert texts,
``locale/<lang>/LC_MESSAGES/cascade.po`` (maintained with ``python -m alerting.catalogue_i18n``).
The notifier is deployed alone and imports only the ground floor: the catalogue's loader is
``core.i18n``, shared with the engine's alert texts.

Filling a text never raises: a translation whose placeholders do not fit falls back to the English
text, and that to the raw text; a page must go out whatever a translator wrote.
"""

from __future__ import annotations

import functools
from typing import Any

from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, fill, normalize_language, translations

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Texts", "normalize_language"]

_translations = translations
_fill = fill


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
