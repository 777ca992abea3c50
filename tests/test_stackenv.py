"""Client commands find the running stack: `make run` writes var/stack.env (ports moved by overrides)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.stackenv import stack_value


def test_stack_env_file_then_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_METRICS_PORT", raising=False)
    monkeypatch.delenv("CASCADE_SIM_CONTROL_PORT", raising=False)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "stack.env").write_text("# Written by scripts/run-stack\nCASCADE_METRICS_PORT=29108\n"
                                                "CASCADE_SIM_CONTROL_PORT=25019\n", encoding="utf-8")
    assert stack_value("CASCADE_METRICS_PORT") == "29108"
    monkeypatch.setenv("CASCADE_METRICS_PORT", "39108")
    assert stack_value("CASCADE_METRICS_PORT") == "39108"  # the environment wins
    monkeypatch.delenv("CASCADE_METRICS_PORT")

    from alerting.cli import add_arguments
    from simulators.cli import _inject_parser

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["list"]).url == "http://127.0.0.1:29108"
    assert _inject_parser().parse_args(["--list"]).control_port == 25019
