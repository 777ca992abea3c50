"""Prometheus provisioning: config and health rules checked by promtool, rule unit tests run by
promtool, and the shipped rules loaded into a real Prometheus scraping a loopback exporter."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
import yaml
from aiohttp import web

from tests.fixtures.procs import require_binary
from tests.fixtures.prom import SHIPPED_PROMETHEUS_DIR


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run([promtool, *args], cwd=SHIPPED_PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)


def test_compose_config_is_valid():
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid():
    rules = sorted(p.name for p in (SHIPPED_PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert "cascade-health.yml" in rules
    result = _promtool("check", "rules", *(f"rules/{name}" for name in rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    tests = sorted(f"tests/{p.name}" for p in (SHIPPED_PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    result = _promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_health_alert_is_routable():
    """Health alerts need component (ops route) plus level/severity (notifier channel choice)."""
    groups = yaml.safe_load((SHIPPED_PROMETHEUS_DIR / "rules" / "cascade-health.yml").read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 9
    for rule in alerts:
        labels = rule["labels"]
        assert labels["level"] in ("1", "2", "3"), rule["alert"]
        assert labels["severity"] == {"1": "notice", "2": "warning", "3": "critical"}[labels["level"]], rule["alert"]
        assert labels["component"], rule["alert"]
        assert {"summary", "diagnosis", "action"} <= set(rule["annotations"]), rule["alert"]


@pytest.fixture
async def exporter():
    """A loopback /metrics endpoint shaped like the warning engine and collector."""
    body = "\n".join([
        "# TYPE cascade_alerts_active gauge",
        'cascade_alerts_active{level="1"} 4',
        'cascade_alerts_active{level="3"} 2',
        "# TYPE cascade_device_up gauge",
        'cascade_device_up{site="s1",cabinet="c7"} 0',
        "",
    ])

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    await runner.cleanup()


async def test_real_prometheus_loads_rules_and_records_levels(prometheus_factory, exporter):
    rules = (SHIPPED_PROMETHEUS_DIR / "rules" / "cascade-health.yml").read_text()
    config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules/*.yml]
scrape_configs:
  - job_name: cascade
    static_configs: [{{targets: ["{exporter}"]}}]
"""
    # Takes ~6s: Prometheus hands static targets to the scraper on its 5s discovery tick.
    prom = await asyncio.to_thread(prometheus_factory, config, {"rules/cascade-health.yml": rules})

    async def wait_for(promql: str, count: int) -> list[dict]:
        deadline = time.monotonic() + 20
        while True:
            result = await asyncio.to_thread(prom.query, promql)
            if len(result) == count:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{promql} never gave {count} series; log:\n{prom.process.log_tail()}")
            await asyncio.sleep(0.2)

    result = await wait_for("cascade:alerts_active:sum_by_level", 2)
    assert {r["metric"]["level"]: r["value"][1] for r in result} == {"1": "4", "3": "2"}
    (critical,) = await wait_for("cascade:alerts_active_critical:sum", 1)
    assert critical["value"][1] == "2"
    # The offline cabinet is pending (for: 5m): the shipped rule matches the exported series.
    (pending,) = await wait_for('ALERTS{alertname="CascadeCabinetOffline"}', 1)
    assert (pending["metric"]["alertstate"], pending["metric"]["cabinet"]) == ("pending", "c7")
