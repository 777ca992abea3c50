"""Benchmarks: ``python -m bench [SUITE|all] [options]``; ``python -m bench --help`` lists the suites
(collector, decode, lineprotocol, warnings, latency, vehicles, scrape, health).

``soak`` (hours, faults on a schedule, docs/soak.md) and ``stress`` (fleet size stepped up to the knee)
run only when named: ``python -m bench soak --duration 2h``, ``python -m bench stress``.

Each prints its figures with a same-run baseline (ratios), because shared machines are noisy.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

_SUITES = {"collector": "bench.collector", "decode": "bench.decode", "lineprotocol": "bench.lineprotocol", "warnings": "bench.warnings",
           "latency": "bench.latency", "vehicles": "bench.vehicles",
           "scrape": "bench.scrape", "health": "bench.health"}
_ON_DEMAND = {"soak": "bench.soak", "stress": "bench.stress", "memory": "bench.memory"}  # long runs: never part of "all"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):  # help never runs anything
        argv = []
        name = "-h"
    else:
        name = argv.pop(0) if argv and not argv[0].startswith("-") else "all"
    if name in _ON_DEMAND:
        return importlib.import_module(_ON_DEMAND[name]).main(argv)
    if name in ("-h", "--help") or (name not in _SUITES and name != "all"):
        print(__doc__)
        print("suites: " + ", ".join(_SUITES) + ", all; on demand: " + ", ".join(_ON_DEMAND))
        return 0 if name in ("-h", "--help") else 2
    names = list(_SUITES) if name == "all" else [name]
    status = 0
    for suite in names:
        if len(names) > 1:  # one suite: its output alone (so --json output is clean JSON)
            print(f"== {suite} ==", flush=True)
        module = importlib.import_module(_SUITES[suite])
        status |= module.main(argv if name != "all" else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
