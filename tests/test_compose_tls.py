"""TLS on every listener of the production compose stack (issue 14, item 5), checked on the files.

No Docker here: the compose file, the provisioning and config/config.yaml are parsed and every service that
listens must serve TLS with the stack's certificate, and every URL from one service to another must be
``https://`` and checked against the stack's CA. A service added with a plain-HTTP port, or a client URL
written ``http://``, fails here. docs/security.md ("TLS in production") describes the same set-up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROVISIONING = ROOT / "provisioning"
CA, CERT, KEY = "/run/secrets/tls_ca", "/run/secrets/tls_cert", "/run/secrets/tls_key"
TLS_SECRETS = {"tls_ca": "./secrets/tls/ca.pem", "tls_cert": "./secrets/tls/server.pem",
               "tls_key": "./secrets/tls/server.key"}
# Services that listen on no port: they only call others (checked as clients below).
NOT_LISTENING = {"grafana-access"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


COMPOSE = _yaml(ROOT / "docker-compose.yml")
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _strings(value: Any) -> list[str]:
    """Every string in a parsed YAML document (values and keys), however deep."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _mounted(service: str, host_path: str) -> str:
    """Where ``host_path`` (a file or folder of the repo) is mounted read-only in ``service``."""
    for volume in SERVICES[service].get("volumes", []):
        source, _, rest = volume.partition(":")
        target, _, mode = rest.partition(":")
        if source == host_path:
            assert mode == "ro", f"{service}: {host_path} must be mounted read-only"
            return target
    raise AssertionError(f"{service} does not mount {host_path}")


def _flag(service: str, name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in the service's command."""
    command = SERVICES[service]["command"]
    for i, arg in enumerate(command):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}":
            return command[i + 1]
    raise AssertionError(f"{service}: no --{name} in its command")


def _web_config(service: str) -> dict[str, Any]:
    """The --web.config.file of Prometheus or Alertmanager, read from the repo folder it is mounted from."""
    path = _flag(service, "web.config.file")
    target = _mounted(service, "./provisioning/tls")
    assert path.startswith(target + "/"), f"{service}: --web.config.file must be in ./provisioning/tls"
    return _yaml(PROVISIONING / "tls" / path[len(target) + 1:])


def _listener_tls(service: str) -> tuple[str, str]:
    """(certificate, key) the service's listener serves with; fails when it has no TLS."""
    env = SERVICES[service].get("environment", {})
    if service == "influxdb":
        assert env["INFLUXDB_HTTP_HTTPS_ENABLED"] == "true"
        return env["INFLUXDB_HTTP_HTTPS_CERTIFICATE"], env["INFLUXDB_HTTP_HTTPS_PRIVATE_KEY"]
    if service in ("prometheus", "alertmanager"):
        tls = _web_config(service)["tls_server_config"]
        assert tls.get("min_version", "TLS12") in ("TLS12", "TLS13")
        return tls["cert_file"], tls["key_file"]
    if service == "grafana":
        assert env["GF_SERVER_PROTOCOL"] == "https"
        return env["GF_SERVER_CERT_FILE"], env["GF_SERVER_CERT_KEY"]
    if service == "cascade-collector":
        config = _flag(service, "config")
        assert config.startswith(_mounted(service, "./config") + "/")
        tls = _yaml(ROOT / "config" / Path(config).name)["metrics"]["tls"]
        return tls["cert_file"], tls["key_file"]
    if service == "cascade-notifier":
        return _flag(service, "tls-cert"), _flag(service, "tls-key")
    raise AssertionError(f"{service} is new: say here how it serves TLS (or list it in NOT_LISTENING), "
                         "and add its name to COMPOSE_NAMES in scripts/make-certs")


@pytest.mark.parametrize("service", sorted(set(SERVICES) - NOT_LISTENING))
def test_every_listener_serves_tls_with_the_stacks_certificate(service: str) -> None:
    assert _listener_tls(service) == (CERT, KEY)
    assert {"tls_cert", "tls_key"} <= set(SERVICES[service].get("secrets", [])), f"{service}: mount the secrets"


def test_services_that_listen_on_nothing_publish_nothing() -> None:
    for service in NOT_LISTENING:
        assert "ports" not in SERVICES[service] and "expose" not in SERVICES[service]
        assert not any(arg in ("--port", "--host") for arg in SERVICES[service].get("command", []))


def test_the_certificates_come_from_one_place() -> None:
    assert {name: COMPOSE["secrets"][name]["file"] for name in TLS_SECRETS} == TLS_SECRETS
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines(), "certificates never go into the image"
    # Nothing else carries a certificate or key: no other path ends in .pem/.key/.crt.
    for service, spec in SERVICES.items():
        for text in _strings(spec):
            assert not re.search(r"\.(pem|key|crt)\b", text), f"{service}: {text!r} bypasses the tls_* secrets"


def test_make_certs_names_every_service_that_listens() -> None:
    text = (ROOT / "scripts" / "make-certs").read_text()
    names = set(re.search(r"^COMPOSE_NAMES=\(([^)]*)\)", text, re.M).group(1).split())
    assert names == set(SERVICES) - NOT_LISTENING


# --- clients -------------------------------------------------------------------------------------

CLIENT_FILES = {
    "docker-compose.yml": COMPOSE,
    "config/config.yaml": _yaml(ROOT / "config" / "config.yaml"),
    "provisioning/prometheus/prometheus.yml": _yaml(PROVISIONING / "prometheus" / "prometheus.yml"),
    "provisioning/alertmanager/alertmanager.yml": _yaml(PROVISIONING / "alertmanager" / "alertmanager.yml"),
    "provisioning/grafana/datasources/datasources.yml": _yaml(PROVISIONING / "grafana" / "datasources" / "datasources.yml"),
}


@pytest.mark.parametrize("name", sorted(CLIENT_FILES))
def test_no_plain_http_url_anywhere(name: str) -> None:
    plain = [s for s in _strings(CLIENT_FILES[name]) if "http://" in s]
    assert plain == [], f"{name}: use https:// (every listener of the stack speaks TLS only)"


def test_env_example_names_no_plain_http_url() -> None:
    """.env.example's values replace the compose file's defaults (GRAFANA_ROOT_URL, the external URLs)."""
    lines = [line for line in (ROOT / ".env.example").read_text().splitlines() if not line.startswith("#")]
    assert [line for line in lines if "http://" in line] == []
    assert "GRAFANA_ROOT_URL=https://" in "\n".join(lines)


def _hosts(urls: list[str]) -> set[str]:
    return {re.sub(r"^https://", "", u).split("/")[0].rsplit(":", 1)[0] for u in urls}


def test_every_url_names_a_host_the_certificate_covers() -> None:
    urls = [m for doc in CLIENT_FILES.values() for s in _strings(doc)
            for m in re.findall(r"https://[^\s\"',}]+", s)]
    targets = [t for job in CLIENT_FILES["provisioning/prometheus/prometheus.yml"]["scrape_configs"]
               for c in job["static_configs"] for t in c["targets"]]
    internal = {h for h in _hosts(urls) | _hosts(targets) if "$" not in h}  # ${...}: the operator's own hosts
    assert internal <= (set(SERVICES) - NOT_LISTENING) | {"localhost"}, internal
    assert {"influxdb", "prometheus", "alertmanager", "grafana", "cascade-notifier"} <= internal


def test_prometheus_scrapes_and_alerts_over_https_with_the_ca() -> None:
    doc = CLIENT_FILES["provisioning/prometheus/prometheus.yml"]
    clients = doc["scrape_configs"] + doc["alerting"]["alertmanagers"]
    for client in clients:
        assert client.get("scheme") == "https", client
        assert client["tls_config"] == {"ca_file": CA}, client
        assert not client["tls_config"].get("insecure_skip_verify")
    jobs = {j["job_name"] for j in doc["scrape_configs"]}
    assert jobs == {"cascade", "cascade-notifier", "prometheus", "alertmanager"}
    assert "tls_ca" in SERVICES["prometheus"]["secrets"]


def test_alertmanager_webhooks_are_https_with_the_ca_and_the_token() -> None:
    doc = CLIENT_FILES["provisioning/alertmanager/alertmanager.yml"]
    hooks = [h for r in doc["receivers"] for h in r.get("webhook_configs", [])]
    assert len(hooks) == 6
    for hook in hooks:
        assert hook["url"].startswith("https://cascade-notifier:9120/webhook/")
        assert hook["http_config"]["tls_config"] == {"ca_file": CA}
        assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/notifier_webhook_token"
    assert "tls_ca" in SERVICES["alertmanager"]["secrets"]


def test_grafana_data_sources_are_https_with_the_ca() -> None:
    doc = CLIENT_FILES["provisioning/grafana/datasources/datasources.yml"]
    for source in doc["datasources"]:
        assert source["url"].startswith("https://"), source["uid"]
        assert source["jsonData"]["tlsAuthWithCACert"] is True, source["uid"]
        assert source["secureJsonData"]["tlsCACert"] == f"$__file{{{CA}}}", source["uid"]
        assert not source["jsonData"].get("tlsSkipVerify")
    assert "tls_ca" in SERVICES["grafana"]["secrets"]


def test_the_regulator_organisations_data_sources_get_the_ca_too(tmp_path: Path) -> None:
    """grafana-access creates them through Grafana's API: it reads $__file{...} as Grafana's provisioning does."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("grafana_access_tls", PROVISIONING / "grafana" / "access" / "access.py")
    assert spec is not None and spec.loader is not None
    access = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = access
    spec.loader.exec_module(access)
    calls = access.plan(_yaml(PROVISIONING / "grafana" / "access" / "access.yaml"), ROOT / "dashboards",
                        CLIENT_FILES["provisioning/grafana/datasources/datasources.yml"], {"INFLUXDB_DB": "cascade"})
    sources = [c.body for c in calls if c.path == "/api/datasources"]
    assert sources and all(s["url"].startswith("https://") for s in sources)
    assert all(s["secureJsonData"]["tlsCACert"] == f"$__file{{{CA}}}" for s in sources), "not expanded as $NAME"
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    sent = access._read_files({"secureJsonData": {"tlsCACert": f"$__file{{{ca}}}", "password": "pw"}})
    assert sent == {"secureJsonData": {"tlsCACert": ca.read_text(), "password": "pw"}}
    with pytest.raises(OSError):
        access._read_files(f"$__file{{{tmp_path / 'missing.pem'}}}")


@pytest.mark.parametrize("service", ["cascade-collector", "cascade-notifier", "grafana-access", "influxdb"])
def test_python_and_go_clients_trust_the_ca(service: str) -> None:
    """Python's ssl (aiohttp, urllib) and Go's crypto/x509 add SSL_CERT_FILE to the system CAs in /etc/ssl/certs."""
    spec = SERVICES[service]
    assert spec["environment"]["SSL_CERT_FILE"] == CA
    assert "tls_ca" in spec["secrets"]


def test_collector_clients_are_https() -> None:
    env = SERVICES["cascade-collector"]["environment"]
    assert env["CASCADE_INFLUX_URL"] == "https://influxdb:8086"
    assert env["CASCADE_ALERTMANAGER_URL"] == "https://alertmanager:9093"
    assert _flag("grafana-access", "url") == "https://grafana:3000"


def test_healthchecks_speak_tls_and_check_the_ca() -> None:
    client = _yaml(PROVISIONING / "tls" / "client.yml")
    assert client == {"tls_config": {"ca_file": CA}}
    for service, spec in SERVICES.items():
        test = spec["healthcheck"]["test"]
        text = " ".join(test)
        assert "http://" not in text and "--insecure" not in text and " -k " not in f" {text} "
        if "curl" in test:
            assert test[test.index("--cacert") + 1] == CA
        if "promtool" in test or "amtool" in test:
            assert "--http.config.file=/etc/tls/client.yml" in test
            assert _mounted(service, "./provisioning/tls") == "/etc/tls"


# --- the web config files, checked by the tools that read them --------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing (scripts/make-certs needs it)")
    out = tmp_path_factory.mktemp("certs") / "tls"
    subprocess.run(["bash", str(ROOT / "scripts" / "make-certs"), "--compose", str(out), "noc.example.net"],
                   check=True, capture_output=True, timeout=120)
    return out


def test_make_certs_compose_covers_every_service(certs: Path) -> None:
    for name in [*(set(SERVICES) - NOT_LISTENING), "localhost", "noc.example.net"]:
        out = subprocess.run(["openssl", "x509", "-noout", "-in", str(certs / "server.pem"), "-checkhost", name],
                             capture_output=True, text=True, check=True).stdout
        assert "does match" in out, name
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.pem"), str(certs / "server.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert certs.stat().st_mode & 0o777 == 0o700 and (certs / "ca.key").stat().st_mode & 0o777 == 0o600


def test_web_config_passes_promtool_with_real_certificates(certs: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing")
    text = (PROVISIONING / "tls" / "web.yml").read_text()
    local = tmp_path / "web.yml"
    local.write_text(text.replace(CERT, str(certs / "server.pem")).replace(KEY, str(certs / "server.key")))
    result = subprocess.run([promtool, "check", "web-config", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and a key that does not belong to the certificate is refused, so the check means something.
    other = tmp_path / "other"
    subprocess.run(["bash", str(ROOT / "scripts" / "make-certs"), str(other)], check=True, capture_output=True,
                   timeout=120)
    local.write_text(text.replace(CERT, str(certs / "server.pem")).replace(KEY, str(other / "server.key")))
    result = subprocess.run([promtool, "check", "web-config", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
