"""The compose stack's TLS, served for real on loopback with a certificate from ``scripts/make-certs --compose``.

Cascade's own listeners (the collector's /metrics and alert API, the notifier's webhook) with their TLS
options; Alertmanager with the shipped ``provisioning/tls/web.yml`` sending the shipped webhooks over HTTPS
with the CA; Prometheus with the same web config scraping the HTTPS collector with the shipped scrape
settings. Each listener refuses plain HTTP and a client that does not trust the CA. docs/security.md,
"TLS in production".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from cascade.cli import main as cascade_main
from cascade.config import AppConfig, ConfigError, TlsSection, server_tls_context
from cascade.pipeline import Pipeline
from notifier import render_alertmanager_config, serve
from tests.fixtures.http import wait_until_answers
from tests.fixtures.ports import free_port
from tests.fixtures.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WEB_CONFIG = ROOT / "provisioning" / "tls" / "web.yml"
SHIPPED_CLIENT_CONFIG = ROOT / "provisioning" / "tls" / "client.yml"
SHIPPED_AM = ROOT / "provisioning" / "alertmanager" / "alertmanager.yml"
SHIPPED_PROM = ROOT / "provisioning" / "prometheus" / "prometheus.yml"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing (scripts/make-certs needs it)")
    out = tmp_path_factory.mktemp("certs") / "tls"
    subprocess.run(["bash", str(ROOT / "scripts" / "make-certs"), "--compose", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def _local(text: str, certs: Path) -> str:
    """A shipped file with the compose secrets' paths pointed at ``certs``."""
    return (text.replace("/run/secrets/tls_ca", str(certs / "ca.pem"))
            .replace("/run/secrets/tls_cert", str(certs / "server.pem"))
            .replace("/run/secrets/tls_key", str(certs / "server.key")))


def _trusting(certs: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs / "ca.pem"))


async def _plain_http_status(url: str) -> int | None:
    """The status a plain-HTTP request to ``url`` gets; None when the connection fails."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(url.replace("https://", "http://", 1)) as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientError:
            return None


async def _refuses_plain_http_and_strangers(url: str) -> None:
    """``url`` (https) serves nothing over plain HTTP (aiohttp drops the connection, Go answers 400 "Client sent
    an HTTP request to an HTTPS server") and fails the check of a client without the CA."""
    assert await _plain_http_status(url) in (None, 400)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(url) as resp:
                await resp.read()


# --- the collector: metrics.tls -------------------------------------------------------------------

@pytest.fixture
async def collector(certs: Path, tmp_path: Path) -> AsyncIterator[Pipeline]:
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0,
                       metrics_tls=TlsSection(cert_file=str(certs / "server.pem"), key_file=str(certs / "server.key")))
    async with Pipeline(config) as pipeline:
        yield pipeline


async def test_collector_serves_metrics_over_https_only(collector: Pipeline, certs: Path) -> None:
    url = f"https://localhost:{collector.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, ssl=_trusting(certs)) as resp:
            assert resp.status == 200
            assert "cascade_" in await resp.text()
    await _refuses_plain_http_and_strangers(url)
    assert await _plain_http_status(url) is None


async def test_python_clients_trust_the_ca_through_ssl_cert_file(collector: Pipeline, certs: Path) -> None:
    """What compose relies on: SSL_CERT_FILE adds the CA for urllib (the healthcheck, grafana-access) and
    aiohttp (the collector's InfluxDB and Alertmanager clients, the notifier) without any code of theirs."""
    url = f"https://localhost:{collector.metrics_port}/metrics"
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    healthcheck = [sys.executable, str(ROOT / "scripts" / "healthcheck.py"), "--url", url]
    fetch = [sys.executable, "-c", "import asyncio, sys, aiohttp\n"
             "async def main():\n"
             "    async with aiohttp.ClientSession() as s, s.get(sys.argv[1]) as r:\n"
             "        return r.status\n"
             "sys.exit(asyncio.run(main()) != 200)", url]

    async def run(argv: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, argv, env={**env, **extra}, capture_output=True, text=True,
                                       timeout=60)  # in a thread: the collector answers on this loop

    for argv in (healthcheck, fetch):
        trusted = await run(argv, SSL_CERT_FILE=str(certs / "ca.pem"))
        assert trusted.returncode == 0, trusted.stderr
        refused = await run(argv)
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr + refused.stdout, argv


async def test_collector_with_an_unusable_certificate_does_not_start(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["bash", str(ROOT / "scripts" / "make-certs"), str(other)], check=True, capture_output=True,
                   timeout=120)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0,
                       metrics_tls=TlsSection(cert_file=str(certs / "server.pem"), key_file=str(other / "server.key")))
    with pytest.raises(ConfigError, match=r"metrics\.tls.*cannot load certificate"):
        async with Pipeline(config):
            pass
    missing = TlsSection(cert_file=str(tmp_path / "nope.pem"), key_file=str(tmp_path / "nope.key"))
    with pytest.raises(ConfigError, match="nope.pem"):
        server_tls_context(missing.cert_file, missing.key_file, source="config.yaml", key="metrics.tls")


def test_metrics_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    from cascade.config import load_config

    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    cabinets = [{"id": "C1", "host": "127.0.0.1", "port": 1502, "device_id": 1, "site": "s",
                 "profile": "reference-cabinet", "slots": 4}]
    path.write_text(yaml.safe_dump({"cabinets": cabinets, "metrics": {"port": 0, "tls": {
        "cert_file": "certs/server.pem", "key_file": "/abs/server.key"}}}))
    config = load_config(path)
    assert config.metrics_tls == TlsSection(cert_file=str(path.parent / "certs" / "server.pem"),
                                            key_file="/abs/server.key")
    path.write_text(yaml.safe_dump({"cabinets": cabinets, "metrics": {"tls": {"cert_file": "a.pem"}}}))
    with pytest.raises(ConfigError, match=r"metrics\.tls\.key_file"):
        load_config(path)


# --- the notifier: cascade notify --tls-cert --tls-key ---------------------------------------------

def _notifier_config(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "config" / "notifier.local.yaml").read_text())
    doc["notifier"]["delivery_log"] = str(tmp_path / "deliveries.jsonl")
    doc["notifier"]["webhook_token_file"] = ""
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_notifier_serves_its_webhook_over_https_only(certs: Path, tmp_path: Path) -> None:
    port = free_port()
    tls = server_tls_context(certs / "server.pem", certs / "server.key", source="test", key="--tls-cert")
    task = asyncio.create_task(serve(str(_notifier_config(tmp_path)), "127.0.0.1", port, ssl_context=tls))
    url = f"https://localhost:{port}/-/healthy"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_answers(http, url, "the notifier over HTTPS", ssl=_trusting(certs))
        await _refuses_plain_http_and_strangers(url)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_notify_needs_both_tls_flags_and_a_matching_pair(certs: Path, tmp_path: Path, capsys) -> None:
    config = str(_notifier_config(tmp_path))
    assert cascade_main(["notify", "--config", config, "--tls-cert", str(certs / "server.pem")]) == 2
    assert "give both" in capsys.readouterr().err
    assert cascade_main(["notify", "--config", config, "--tls-cert", str(certs / "ca.pem"),
                         "--tls-key", str(certs / "server.key")]) == 2
    assert "cannot load certificate" in capsys.readouterr().err


# --- Alertmanager and Prometheus with the shipped web config ----------------------------------------

def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} missing")
    return path


def _wait_https(url: str, context: ssl.SSLContext, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _get_json(url: str, context: ssl.SSLContext) -> Any:
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        return json.load(resp)


@pytest.fixture
def web_config(certs: Path, tmp_path: Path) -> tuple[Path, Path]:
    web_yml, client_yml = tmp_path / "web.yml", tmp_path / "client.yml"
    web_yml.write_text(_local(SHIPPED_WEB_CONFIG.read_text(), certs))
    client_yml.write_text(_local(SHIPPED_CLIENT_CONFIG.read_text(), certs))
    return web_yml, client_yml


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def test_alertmanager_serves_https_and_sends_webhooks_with_the_ca(
        certs: Path, tmp_path: Path, web_config: tuple[Path, Path], processes: list[ServerProcess]) -> None:
    binary, amtool = _binary("prometheus-alertmanager"), _binary("amtool")
    web_yml, client_yml = web_config
    received: list[tuple[str, str]] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append((request.match_info["receiver"], request.headers.get("Authorization", "")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhook/{receiver}", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    notifier_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", notifier_port, ssl_context=server_tls_context(
        certs / "server.pem", certs / "server.key", source="test", key="tls")).start()
    token = tmp_path / "token"
    token.write_text("t" * 40)
    try:
        (tmp_path / "am").mkdir()
        config = tmp_path / "am" / "alertmanager.yml"
        config.write_text(render_alertmanager_config(SHIPPED_AM.read_text(), f"https://localhost:{notifier_port}",
                                                     token_file=str(token), ca_file=str(certs / "ca.pem")))
        port = free_port()
        processes.append(ServerProcess(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}", f"--web.config.file={web_yml}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], tmp_path / "am").start())
        url = f"https://localhost:{port}"
        await asyncio.to_thread(_wait_https, f"{url}/-/ready", _trusting(certs))
        await _refuses_plain_http_and_strangers(f"{url}/-/ready")
        # The compose healthcheck's command, with the shipped client config.
        check = subprocess.run([amtool, f"--alertmanager.url={url}", f"--http.config.file={client_yml}", "config",
                                "show"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        alert = [{"labels": {"alertname": "thermal_runaway", "rule": "thermal_runaway", "level": "3", "site": "s",
                             "cabinet": "C1", "slot": "1"}}]
        request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alert).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10, context=_trusting(certs))
        for _ in range(150):
            if ("critical", f"Bearer {'t' * 40}") in received:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no webhook over HTTPS; got {received}; log:\n{processes[0].log_tail()}")
    finally:
        await runner.cleanup()


async def test_prometheus_serves_https_and_scrapes_the_https_collector(
        collector: Pipeline, certs: Path, tmp_path: Path, web_config: tuple[Path, Path],
        processes: list[ServerProcess]) -> None:
    binary = _binary("prometheus")
    web_yml, _ = web_config
    doc = yaml.safe_load(_local(SHIPPED_PROM.read_text(), certs))
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "cascade"]
    job["static_configs"] = [{"targets": [f"localhost:{collector.metrics_port}"]}]
    job["scrape_interval"] = "1s"
    port = free_port()
    [own] = [j for j in doc["scrape_configs"] if j["job_name"] == "prometheus"]
    own["static_configs"] = [{"targets": [f"localhost:{port}"]}]
    own["scrape_interval"] = "1s"
    doc["scrape_configs"] = [job, own]  # the shipped settings of the collector's and Prometheus' own job
    doc.pop("rule_files")
    doc.pop("alerting")
    (tmp_path / "prom").mkdir()
    config = tmp_path / "prom" / "prometheus.yml"
    config.write_text(yaml.safe_dump(doc))
    processes.append(ServerProcess(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prom' / 'data'}",
         f"--web.config.file={web_yml}", f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prom").start())
    url = f"https://localhost:{port}"
    await asyncio.to_thread(_wait_https, f"{url}/-/ready", _trusting(certs))
    await _refuses_plain_http_and_strangers(f"{url}/-/ready")
    query = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': 'up'})}"
    for _ in range(100):
        answer = await asyncio.to_thread(_get_json, query, _trusting(certs))
        up = {r["metric"]["job"]: r["value"][1] for r in answer["data"]["result"]}
        if up == {"cascade": "1", "prometheus": "1"}:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"scrapes over HTTPS did not succeed: {up}; log:\n{processes[0].log_tail()}")
