"""The language the dashboards are built in: Simplified Chinese by default, English by option.

Every text an operator, on-call engineer or regulator reads (dashboard and panel titles,
descriptions, axis and legend labels, column names, value texts, variable labels) is written once
per language where it is used, ``t("换电柜在线", "Cabinets online")``, so a panel's two texts stay
side by side. :func:`language` sets the language for one build::

    with language("en"):
        model = build_fleet(rules)

Language codes are those of the alert and notifier texts (``alerting.i18n``): ``zh_CN`` and ``en``
(``zh``, ``zh-CN``, ``en_US`` are accepted).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from alerting.i18n import DEFAULT_LANGUAGE, LANGUAGES, normalize_language

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "language", "normalize_language", "t"]

_LANGUAGE: ContextVar[str] = ContextVar("dashboard_language", default=DEFAULT_LANGUAGE)


def t(zh: str, en: str) -> str:
    """The text in the language being built."""
    return zh if _LANGUAGE.get() == "zh_CN" else en


@contextmanager
def language(code: str) -> Iterator[str]:
    """Build in ``code`` (``zh_CN``/``en`` or a usual spelling; ValueError otherwise) inside the block."""
    token = _LANGUAGE.set(normalize_language(code))
    try:
        yield _LANGUAGE.get()
    finally:
        _LANGUAGE.reset(token)
