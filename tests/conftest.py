"""Shared fixtures. Service fixtures (real InfluxDB, Prometheus, Alertmanager, Mosquitto) live in
``tests/fixtures/`` and are registered here as plugins."""

from __future__ import annotations

import signal
from typing import Any

pytest_plugins = ["tests.fixtures.influxdb", "tests.fixtures.prom", "tests.fixtures.mosquitto"]


def pytest_configure(config: Any) -> None:
    """A run stopped with SIGTERM (a CI timeout, `kill`) tears its fixtures down like Ctrl-C does: the
    servers they started run in sessions of their own and would otherwise outlive the run."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
