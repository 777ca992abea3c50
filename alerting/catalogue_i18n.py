"""Keep the message catalogue (``locale/``) in step with the texts in the source.

The texts to translate are the English ones in the source: each rule's ``name``, ``description``,
``diagnosis``, ``action`` and ``unit`` in ``alerting/catalogue.yaml`` (and the labels of the
thermal-runaway evidence terms), and every ``tr("...")`` / ``ptr("context", "...")`` / ``N_("...")`` call in
``alerting/``, ``notifier/``, ``health/`` and the modules of ``_PYTHON_FILES`` (the vehicle commands). Babel extracts them (this module is also its extractor for the
rule catalogue), merges them into ``locale/<lang>/LC_MESSAGES/cascade.po`` (new texts untranslated,
removed ones dropped) and compiles each ``.po`` into the ``.mo`` that :mod:`gettext` reads at run time.

    python -m alerting.catalogue_i18n --write   # after changing a text: update the .po files, compile the .mo files
    python -m alerting.catalogue_i18n --check   # exit 1 when a .po or .mo is stale or a Chinese text is missing

Translate by editing the ``msgstr`` lines of the ``.po`` file, then ``--write`` again. A translation
keeps the placeholders of its English text (``{value:.1f}``, ``{slot}``); tests/test_i18n.py checks it.
Babel is needed here only (``[test]`` extras), not at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from alerting.i18n import DOMAIN, LANGUAGES, LOCALE_DIR
from alerting.rules import parse_rules

__all__ = ["KEYWORDS", "RULE_TEXT_KEYS", "build_files", "extract_rules", "main", "template_catalog"]

ROOT = LOCALE_DIR.parent
#: Python calls whose string arguments are texts: ``tr(msgid, **values)``, ``ptr(context, msgid, **values)``
#: and the marker ``N_(msgid)`` for a text translated later.
KEYWORDS: dict[str, Any] = {"tr": None, "ptr": ((1, "c"), 2), "N_": None}
#: Rule keys whose text is shown to people.
RULE_TEXT_KEYS = ("name", "description", "diagnosis", "action")
_PYTHON_SOURCES = ("alerting", "notifier", "health")
#: Single modules elsewhere whose texts people read: vehicle command refusals and ``cascade vehicle``.
_PYTHON_FILES = ("cascade/commands.py", "cascade/vehicle_cli.py")
# A fixed date keeps the files byte-stable: they change only when a text changes.
_EPOCH = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def extract_rules(fileobj: Any, keywords: Any, comment_tags: Any, options: Any) -> Iterator[tuple[Any, ...]]:
    """Babel extraction method for a rule catalogue: ``(line, funcname, message, comments)``."""
    text = fileobj.read().decode("utf-8")
    root = yaml.compose(text)
    rules = next((value for key, value in root.value if key.value == "rules"), None) if root else None
    for node in getattr(rules, "value", []):
        items = {key.value: value for key, value in node.value}
        rule_id = items["id"].value if "id" in items else "?"
        for key in RULE_TEXT_KEYS:
            if key in items and isinstance(items[key].value, str):
                yield items[key].start_mark.line + 1, "tr", items[key].value.strip(), [f"rule {rule_id}: {key}"]
        if "unit" in items and str(items["unit"].value):
            yield items["unit"].start_mark.line + 1, "ptr", ("unit", str(items["unit"].value)), [
                f"rule {rule_id}: unit"]
    # The engine labels each evidence term of a fusion rule with its input's description.
    for rule in parse_rules(text).values():
        for term in rule.fusion:
            yield 1, "ptr", ("evidence", term.input.describe()), [f"rule {rule.id}: evidence term"]


def template_catalog() -> Any:
    """Every text of the source, as a Babel catalogue (the ``.pot``)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_file

    catalog = Catalog(project="Cascade", version="1", creation_date=_EPOCH, revision_date=_EPOCH,
                      charset="utf-8", fuzzy=False)
    sources: list[tuple[Any, Path]] = [(extract_rules, ROOT / "alerting" / "catalogue.yaml")]
    sources += [("python", path) for package in _PYTHON_SOURCES for path in sorted((ROOT / package).glob("*.py"))]
    sources += [("python", ROOT / name) for name in _PYTHON_FILES]
    for method, path in sources:
        for lineno, message, comments, context in extract_from_file(
                method, str(path), keywords=KEYWORDS, comment_tags=("Translators:",), strip_comment_tags=True):
            where = path.relative_to(ROOT).as_posix()
            catalog.add(message, None, [(where, lineno)], auto_comments=comments, context=context)
    return catalog


def build_files() -> dict[Path, bytes]:
    """The ``.po`` and ``.mo`` files as they should be: each language's ``.po`` merged with the
    source texts (existing translations kept), and compiled."""
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po, write_po

    template = template_catalog()
    files: dict[Path, bytes] = {}
    for language in LANGUAGES:
        folder = LOCALE_DIR / language / "LC_MESSAGES"
        po_path = folder / f"{DOMAIN}.po"
        if po_path.exists():
            with open(po_path, "rb") as f:
                catalog = read_po(f, locale=language, domain=DOMAIN)
        else:
            catalog = Catalog(locale=language, domain=DOMAIN, project="Cascade", version="1", charset="utf-8")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.revision_date = catalog.creation_date = _EPOCH
        catalog.fuzzy = False
        catalog.language_team = catalog.last_translator = "Cascade <cascade@example.net>"
        catalog.msgid_bugs_address = ""
        catalog.header_comment = (
            f"# Cascade message catalogue, {language}: the texts of the warning engine and the notifier.\n"
            "# Sources: alerting/catalogue.yaml, alerting/*.py, notifier/*.py (English, the source language).\n"
            "# Translate the msgstr lines, keep every {placeholder} of the msgid, then run\n"
            "#     python -m alerting.catalogue_i18n --write\n"
            "# to merge new texts and compile the .mo file (docs/notifications.md, \"Language\").")
        po, mo = io.BytesIO(), io.BytesIO()
        write_po(po, catalog, width=100, no_location=True, ignore_obsolete=True, include_previous=False)
        write_mo(mo, catalog)
        files[po_path] = po.getvalue()
        files[folder / f"{DOMAIN}.mo"] = mo.getvalue()
    return files


def untranslated(language: str = LANGUAGES[0]) -> list[str]:
    """Texts of ``language``'s ``.po`` without a translation (English needs none)."""
    from babel.messages.pofile import read_po

    with open(LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as f:
        catalog = read_po(f, locale=language)
    return [str(m.id) for m in catalog if m.id and (not m.string or m.fuzzy)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerting.catalogue_i18n", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="update the .po files and compile the .mo files")
    mode.add_argument("--check", action="store_true", help="exit 1 if a file is stale or a Chinese text is missing")
    args = parser.parse_args(argv)
    files = build_files()
    stale = [path for path, data in files.items() if not path.exists() or path.read_bytes() != data]
    if args.write:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[path])
            print(f"wrote {path.relative_to(ROOT)}")
        missing = untranslated()
        if missing:
            print(f"{len(missing)} text(s) still to translate in locale/{LANGUAGES[0]}/LC_MESSAGES/{DOMAIN}.po")
        return 0
    for path in stale:
        print(f"{path.relative_to(ROOT)} is stale: run python -m alerting.catalogue_i18n --write", file=sys.stderr)
    missing = untranslated()
    for msgid in missing:
        print(f"untranslated ({LANGUAGES[0]}): {msgid!r}", file=sys.stderr)
    return 1 if stale or missing else 0


if __name__ == "__main__":
    sys.exit(main())
