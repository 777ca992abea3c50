"""Shared fixtures. Service fixtures (real InfluxDB, Prometheus, Alertmanager) live in
``tests/fixtures/`` and are registered here as plugins."""

pytest_plugins = ["tests.fixtures.influxdb", "tests.fixtures.prom", "tests.fixtures.mosquitto"]
