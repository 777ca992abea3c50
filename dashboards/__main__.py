"""``python -m dashboards``: regenerate every dashboard JSON file next to this package.

Thresholds come from the warning catalogue; ``--catalogue`` builds them from another rule file
(e.g. a fleet's tuned copy) and ``--directory`` writes somewhere else, so the committed files, which
must match the shipped catalogue (tests/test_dashboards.py), stay untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alerting.rules import DEFAULT_CATALOGUE, load_rules
from core.errors import CascadeError
from dashboards.build import DIRECTORY, write_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboards",
                                     description="Regenerate every Grafana dashboard JSON file (<uid>.json).")
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE,
                        help="warning rule file the panel thresholds follow (default: the shipped %(default)s)")
    parser.add_argument("--directory", type=Path, default=DIRECTORY,
                        help="where to write <uid>.json (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        paths = write_all(args.directory, load_rules(args.catalogue))
    except CascadeError as err:  # a bad or incompatible catalogue: one line naming file, rule and fix
        raise SystemExit(f"python -m dashboards: {err}") from None
    for path in paths:
        print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
