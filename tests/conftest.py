"""Shared fixtures. Service fixtures (real InfluxDB, Prometheus, Alertmanager, Mosquitto) live in
``tests/fixtures/`` and are registered here as plugins."""

pytest_plugins = ["tests.fixtures.services"]
