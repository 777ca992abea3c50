"""``python -m dashboards``: regenerate every dashboard JSON file next to this package.

The shipped (provisioned) set is Simplified Chinese. ``--language en`` builds the English set, by
default into ``var/dashboards-en/`` (never into ``dashboards/``: Grafana's file provider loads every
JSON file below that folder, and both sets use the same uids so their links work). Thresholds come
from the warning catalogue; ``--catalogue`` builds them from another rule file (e.g. a fleet's tuned
copy) and ``--directory`` writes somewhere else, so the committed files, which must match the shipped
catalogue (tests/test_dashboards.py), stay untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alerting.rules import DEFAULT_CATALOGUE, load_rules
from core.errors import CascadeError
from dashboards.build import DIRECTORY, write_all
from dashboards.i18n import DEFAULT_LANGUAGE, LANGUAGES, normalize_language

ENGLISH_DIRECTORY = DIRECTORY.parent / "var" / "dashboards-en"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboards",
                                     description="Regenerate every Grafana dashboard JSON file (<uid>.json).")
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE,
                        help="warning rule file the panel thresholds follow (default: the shipped %(default)s)")
    parser.add_argument("--language", default=DEFAULT_LANGUAGE,
                        help=f"language of every title, description and label: {' or '.join(LANGUAGES)} "
                             "(default: %(default)s, the provisioned set)")
    parser.add_argument("--directory", type=Path, default=None,
                        help=f"where to write <uid>.json (default: {DIRECTORY} for {DEFAULT_LANGUAGE}, "
                             f"{ENGLISH_DIRECTORY} for en)")
    args = parser.parse_args(argv)
    try:
        lang = normalize_language(args.language)
    except ValueError as err:
        parser.error(str(err))
    directory = args.directory or (DIRECTORY if lang == DEFAULT_LANGUAGE else ENGLISH_DIRECTORY)
    try:
        paths = write_all(directory, load_rules(args.catalogue), lang)
    except CascadeError as err:  # a bad or incompatible catalogue: one line naming file, rule and fix
        raise SystemExit(f"python -m dashboards: {err}") from None
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
