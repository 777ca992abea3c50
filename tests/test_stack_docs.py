"""README and the Makefile say what scripts/run-stack honours: every port variable, the issuer, the
vehicle scenarios; the `make run` banner prints the issuer's address."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_STACK = (ROOT / "scripts" / "run-stack").read_text(encoding="utf-8")
PORT_VARIABLES = sorted(set(re.findall(r"^([A-Z_]*PORT)=\$\{", RUN_STACK, re.MULTILINE)))


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_makefile_header_lists_every_port_variable_run_stack_honours() -> None:
    header = "\n".join(line for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
                       if line.startswith("#"))
    assert len(PORT_VARIABLES) >= 15, PORT_VARIABLES
    assert [v for v in PORT_VARIABLES if not re.search(rf"\b{v}\b", header)] == []


def test_the_readme_tables_list_the_issuer_and_the_vehicle_scenarios() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    where, config = _section(readme, "What runs where"), _section(readme, "Configuration")
    assert "9140" in where and "ISSUER_PORT" in where and "VEHICLE_SCENARIOS" in where
    assert "| `ISSUER_PORT` | 9140 |" in config and "| `VEHICLE_SCENARIOS` |" in config
    assert [v for v in PORT_VARIABLES if f"`{v}`" not in config] == []


def test_the_make_run_banner_prints_the_issuer_address() -> None:
    banner = RUN_STACK.split("Cascade local stack is up", 1)[1].split('echo "Press Ctrl-C to stop."', 1)[0]
    assert re.search(r"^  Issuer +\$ISSUER_URL", banner, re.MULTILINE)
