"""Configuration loading: every error names the file, the key and the fix; shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cascade.app import alerting_settings
from cascade.config import ConfigError, load_config

ROOT = Path(__file__).parents[1]


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ("cabinets: [{id: A, host: h}]\nbogus: 1\n", "bogus", "unknown key"),
    ("cabinets: []\n", "cabinets", "no cabinets"),
    ("cabinets: [{id: A, host: h, port: x}]\n", "cabinets[0].port", "not an integer"),
    ("cabinets: [{id: A, host: h, interval: 5}]\n", "cabinets[0].interval", "unknown key"),
    ("cabinets: [{id: A, host: h}, {id: A, host: h2}]\n", "cabinets[1].id", "listed twice"),
    ("cabinets: [{id: A, host: h, profile: nope}]\n", "cabinets[0].profile", "no profile named"),
    ("cabinets: [{id: A, host: h}]\nfleet_files: [missing.yaml]\n", "fleet_files[0]", "does not exist"),
    ("cabinets: [{id: A, host: h}]\npoll: {jitter: 2}\n", "poll.jitter", "0 <= jitter < 1"),
    ("cabinets: [{id: A, host: '${NOT_SET_ANYWHERE}'}]\n", "cabinets[0].host", "NOT_SET_ANYWHERE is not set"),
    ("cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://x', database: d}\n", "influxdb", "spool_dir"),
])
def test_config_errors_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key, str(info.value)
    assert str(path) in str(info.value) and fragment in str(info.value) and "Fix:" in str(info.value)


def test_alerting_section_errors(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "cabinets: [{id: A, host: h}]\nalerting: {resend: 5}\n"))
    with pytest.raises(ConfigError, match=r"alerting\.resend: unknown key"):
        alerting_settings(config)


def test_env_defaults_relative_paths_and_fleet_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAB_HOST", "10.0.0.9")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "cabinets:\n  - {id: F1, host: 127.0.0.1, port: 1502}\n", "fleet.yaml")
    path = _write(tmp_path / "sub", "cabinets: [{id: A, host: '${CAB_HOST}', port: '${CAB_PORT:-15020}'}]\n"
                  "fleet_files: [fleet.yaml]\ndefaults: {interval_s: 2}\n"
                  "influxdb: {url: 'http://127.0.0.1:8086', database: cascade, spool_dir: ../spool}\n"
                  "alerting: {state_file: state/alerts.json}\n")
    with pytest.raises(ConfigError, match="not an integer"):  # env values are text: a port must be a number
        load_config(path)
    path.write_text(path.read_text().replace("port: '${CAB_PORT:-15020}'", "port: 15020"))
    config = load_config(path)
    assert [(c.id, c.host, c.interval_s) for c in config.cabinets] == [("A", "10.0.0.9", 2), ("F1", "127.0.0.1", 2)]
    assert Path(config.influxdb.spool_dir) == tmp_path / "sub" / ".." / "spool"
    assert Path(config.alerting["state_file"]) == tmp_path / "sub" / "state" / "alerts.json"


def test_shipped_configs_load(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CASCADE_INFLUX_URL", "http://influxdb:8086")
    monkeypatch.setenv("CASCADE_INFLUX_USER", "cascade")
    monkeypatch.setenv("CASCADE_INFLUX_PASSWORD", "secret")
    monkeypatch.setenv("CASCADE_API_TOKEN", "token")
    production = load_config(ROOT / "config" / "config.yaml")
    assert production.influxdb.password == "secret" and production.metrics_host == "0.0.0.0"
    alerting_settings(production)
    # config/local.yaml reads the fleet file the simulator writes; give it one in a copy.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "local.yaml").write_text((ROOT / "config" / "local.yaml").read_text())
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "fleet.yaml").write_text(yaml.safe_dump(
        {"cabinets": [{"id": "C0001", "site": "site-01", "host": "127.0.0.1", "port": 15020,
                       "device_id": 1, "profile": "reference-cabinet", "slots": 12}]}))
    local = load_config(tmp_path / "config" / "local.yaml")
    assert local.cabinets[0].id == "C0001" and local.influxdb.database == "cascade"
    assert alerting_settings(local)["alertmanager_url"] == "http://127.0.0.1:9093"


def test_compose_file_pins_images_and_gates_on_health() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "image" in service and "build" not in service:
            tag = service["image"].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] not in ("latest", ""), f"{name}: pin the image tag"
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dep, cond in (service.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}"
    assert (ROOT / ".env.example").exists() and not (ROOT / ".env").exists()


def test_slot_count_beyond_the_register_map_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path, "model: high\nslots: {count: 2, base: {input: 60000}, stride: 32}\n"
                     "slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n", "high.yaml")
    path = _write(tmp_path, "cabinets: [{id: A, host: h, profile: high.yaml, slots: 200}]\n")
    with pytest.raises(ConfigError, match="beyond 65535") as info:
        load_config(path)
    assert info.value.key == "cabinets[0]"
