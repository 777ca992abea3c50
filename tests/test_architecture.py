"""The layering is enforced, not described: import-linter contracts fail on a violation.

Layers (``.importlinter``, docs/architecture.md): core (ground) ← collectors | exporters | alerting
← simulators | dashboards ← cascade (app) ← bench; the notifier is a separate service that imports
only core.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for name in ("core", "collectors", "exporters", "alerting", "notifier", "simulators", "dashboards", "cascade",
                 "bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.json",
                                                                                     "*.csv", "*.yaml"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_shipped_tree_keeps_every_contract() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("core/model.py", "import cascade.app", "Layers"),                      # ground imports the app
    ("alerting/engine.py", "import exporters.influx.sink", "Layers"),      # engine reaches into a sink
    ("collectors/modbus/source.py", "import alerting.engine", "Layers"),   # a source imports the engine
    ("notifier/server.py", "import alerting.engine", "notifier"),          # notifier loads the engine
    ("simulators/cabinet.py", "import collectors.modbus.device", "Simulators"),
])
def test_a_violation_breaks_the_build(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # deliberate violation\n", encoding="utf-8")
    out = _lint(tree)
    assert out.returncode != 0, f"{module}: '{line}' was not caught\n{out.stdout}"
    assert "BROKEN" in out.stdout and contract in out.stdout.split("Broken contracts", 1)[-1]


def test_no_top_level_package_is_in_an_import_cycle_with_another() -> None:
    """Every pair of top-level packages imports in at most one direction (grimp's graph)."""
    import grimp

    names = ["core", "collectors", "exporters", "alerting", "notifier", "simulators", "dashboards", "cascade", "bench"]
    graph = grimp.build_graph(*names, cache_dir=None)
    cycles = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ab = graph.chain_exists(importer=a, imported=b, as_packages=True)
            ba = graph.chain_exists(importer=b, imported=a, as_packages=True)
            if ab and ba and {a, b} != {"cascade", "bench"}:  # `cascade bench` dispatch: the one allowed pair
                cycles.append((a, b))
    assert not cycles
