"""Configuration loading: every error names the file, the key and the fix; shipped configs load."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    # env values are text: "15020" from ${CAB_PORT:-15020} is the number 15020 (was refused before pydantic)
    assert [c.port for c in load_config(path).cabinets] == [15020, 1502]
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


# --- one validation approach: pydantic models (core.validation), one-line errors ------------------

_BAD_RUN_CONFIGS = [
    # (what, YAML, key, problem fragment, fix fragment); the cabinet `A` is valid unless the case breaks it
    ("wrong type", "cabinets: [{id: A, host: h, port: x}]", "cabinets[0].port", "'x' is not an integer", "1-65535"),
    ("wrong type", "cabinets: [{id: A, host: h, site: 7}]", "cabinets[0].site", "7 is not text", "site"),
    ("wrong type", "cabinets: 5", "cabinets", "5 is not a list", "list of cabinets"),
    ("wrong type", "cabinets: [{id: A, host: h}]\npoll: 5", "poll", "5 is not a mapping", "jitter"),
    ("wrong type", "cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://i', database: d, spool_dir: s, api: v3}",
     "influxdb.api", "'v3' is not 'v1' or 'v2'", "v1"),
    ("wrong type", "cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://i', database: d, spool_dir: s, gzip: maybe}",
     "influxdb.gzip", "'maybe' is not true or false", "true or false"),
    ("wrong type", "cabinets: [{id: A, host: h}]\nfleet_files: [7]", "fleet_files[0]", "7 is not text", "fleet"),
    ("bool for a number", "cabinets: [{id: A, host: h, port: true}]", "cabinets[0].port", "boolean", "1-65535"),
    ("bool for a number", "cabinets: [{id: A, host: h, interval_s: yes}]", "cabinets[0].interval_s", "boolean",
     "seconds between polls"),
    ("bool for a number", "cabinets: [{id: A, host: h}]\nmetrics: {port: no}", "metrics.port", "boolean", "TCP port"),
    ("bool for a number", "cabinets: [{id: A, host: h}]\npoll: {jitter: true}", "poll.jitter", "boolean", "fraction"),
    ("bool for a number", "cabinets: [{id: A, host: h}]\nstatus_interval_s: false", "status_interval_s", "boolean",
     "0 = off"),
    ("bool for a number", "cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://i', database: d, spool_dir: s, "
     "batch_size: true}", "influxdb.batch_size", "boolean", "lines per write"),
    ("bool for a number", "cabinets: [{id: A, host: h}]\ndefaults: {timeout_s: on}", "defaults.timeout_s", "boolean",
     "Modbus answer"),
    ("unknown key", "cabinets: [{id: A, host: h}]\npol: {}", "pol", "unknown key", "did you mean 'poll'"),
    ("unknown key", "cabinets: [{id: A, hots: h}]", "cabinets[0].hots", "unknown key", "did you mean 'host'"),
    ("unknown key", "cabinets: [{id: A, host: h}]\ndefaults: {intervall_s: 5}", "defaults.intervall_s",
     "unknown key", "interval_s"),
    ("unknown key", "cabinets: [{id: A, host: h}]\npoll: {jiter: 0.2}", "poll.jiter", "unknown key", "jitter"),
    ("unknown key", "cabinets: [{id: A, host: h}]\nmetrics: {address: x}", "metrics.address", "unknown key", "host"),
    ("unknown key", "cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://i', database: d, spool_dir: s, db: d}",
     "influxdb.db", "unknown key", "database"),
    ("unknown key", "cabinets: [{id: A, host: h}]\nalerting: {enable: false}", "alerting.enable", "unknown key",
     "enabled"),
    ("unknown key", "cabinets: [{id: A, host: h}]\nalerting: {actions: {retries: 3}}", "alerting.actions.retries",
     "unknown key", "retry_s"),
    ("missing key", "cabinets: [{host: h}]", "cabinets[0].id", "missing", "unique cabinet id"),
    ("missing key", "cabinets: [{id: A}]", "cabinets[0].host", "missing", "Modbus TCP address"),
    ("missing key", "cabinets: [{id: A, host: h}]\ninfluxdb: {database: d, spool_dir: s}", "influxdb.url", "missing",
     "http(s)://host:port"),
    ("out of range", "cabinets: [{id: A, host: h, port: 0}]", "cabinets[0].port", "0 is not greater than or equal "
     "to 1", "1-65535"),
    ("out of range", "cabinets: [{id: A, host: h, port: 70000}]", "cabinets[0].port", "70000", "1-65535"),
    ("out of range", "cabinets: [{id: A, host: h}]\nmetrics: {port: -1}", "metrics.port", "-1", "0 = any free port"),
    ("out of range", "cabinets: [{id: A, host: h, interval_s: 0}]", "cabinets[0].interval_s",
     "0 is not greater than 0", "seconds between polls"),
    ("out of range", "cabinets: [{id: A, host: h, slots: 0}]", "cabinets[0].slots", "0", "1-256"),
    ("out of range", "cabinets: [{id: A, host: h, device_id: 256}]", "cabinets[0].device_id", "256", "0-255"),
    ("out of range", "cabinets: [{id: A, host: h}]\npoll: {jitter: 1}", "poll.jitter", "1 is not less than 1",
     "0 <= jitter < 1"),
    ("out of range", "cabinets: [{id: A, host: h}]\nstatus_interval_s: .nan", "status_interval_s", "nan",
     "0 = off"),
    ("out of range", "cabinets: [{id: A, host: h}]\nalerting: {resend_interval_s: -5}", "alerting.resend_interval_s",
     "-5", "re-sends"),
    ("bad env reference", "cabinets: [{id: A, host: h, port: '${CASCADE_TEST_UNSET_PORT}'}]", "cabinets[0].port",
     "CASCADE_TEST_UNSET_PORT is not set", "${CASCADE_TEST_UNSET_PORT:-default}"),
    ("bad env reference", "cabinets: [{id: A, host: h, port: '${CASCADE_TEST_PORT_TEXT:-x502}'}]",
     "cabinets[0].port", "'x502' is not an integer", "1-65535"),
    ("bad env reference", "cabinets: [{id: A, host: h}]\nalerting: {enabled: '${CASCADE_TEST_FLAG:-yes}'}",
     "alerting.enabled", "'yes' is not true or false", "true or false"),
    ("cross-field", "cabinets: [{id: A, host: h}]\ninfluxdb: {url: 'http://i', spool_dir: s, api: v2}", "influxdb",
     "token", "docs/influxdb-sink.md"),
    ("cross-field", "cabinets: [{id: A, host: h}]\nalerting: {actions: {rules: {no_such_rule: {2: none}}}}",
     "alerting.actions.rules.no_such_rule", "no such rule", "catalogue"),
]


def _first_error(path: Path) -> ConfigError:
    """The error of ``path``: from loading, or from its alerting section as check-config sees it."""
    with pytest.raises(ConfigError) as info:
        alerting_settings(load_config(path))
    return info.value


@pytest.mark.parametrize(("what", "text", "key", "problem", "fix"), _BAD_RUN_CONFIGS,
                         ids=[f"{case[0]}: {case[2]}" for case in _BAD_RUN_CONFIGS])
def test_bad_run_config_is_one_line_with_file_key_and_fix(tmp_path: Path, what: str, text: str, key: str,
                                                          problem: str, fix: str) -> None:
    path = _write(tmp_path, text + "\n")
    err = _first_error(path)
    message = str(err)
    assert "\n" not in message and message.startswith(f"{path}: {key}: "), message
    assert (err.source, err.key) == (str(path), key), message
    assert problem in err.problem and fix in err.fix and message.endswith(f". Fix: {err.fix}"), message


def test_fleet_file_errors_name_the_fleet_file(tmp_path: Path) -> None:
    fleet = _write(tmp_path, "cabinets:\n  - {id: F1, host: h}\n  - {id: F2, host: h, port: '99999'}\n", "fleet.yaml")
    path = _write(tmp_path, "fleet_files: [fleet.yaml]\n")
    err = _first_error(path)
    assert (err.source, err.key) == (str(fleet), "cabinets[1].port") and "99999" in str(err) and "Fix:" in str(err)
    fleet.write_text("cabinets: [{id: F1, host: h, colour: red}]\n")
    assert _first_error(path).key == "cabinets[0].colour" and _first_error(path).source == str(fleet)
    fleet.write_text("cabinets: [{id: F1, host: h}]\nsite: x\n")  # unknown keys are errors in a fleet file too
    assert (_first_error(path).source, _first_error(path).key) == (str(fleet), "site")
    fleet.write_text("- {id: F1, host: '${CASCADE_TEST_UNSET_HOST}'}\n")  # a bare list is a fleet file as well
    assert (_first_error(path).source, _first_error(path).key) == (str(fleet), "[0].host")
    fleet.write_text("- {id: A, host: h}\n")  # ids are unique across the config and its fleet files
    path.write_text("cabinets: [{id: A, host: h}]\nfleet_files: [fleet.yaml]\n")
    err = _first_error(path)
    assert (err.source, err.key) == (str(fleet), "cabinets[0].id") and f"first at {path}: cabinets[0]" in str(err)


def test_values_from_the_environment_are_text_and_accepted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CASCADE_TEST_PORT", "1502")
    monkeypatch.setenv("CASCADE_TEST_ALERTS", "false")
    path = _write(tmp_path, "cabinets: [{id: A, host: h, port: '${CASCADE_TEST_PORT}', interval_s: '2.5', "
                            "slots: '${CASCADE_TEST_SLOTS:-4}'}]\n"
                            "metrics: {port: '${CASCADE_TEST_METRICS_PORT:-0}'}\npoll: {jitter: '0'}\n"
                            "influxdb: {url: 'http://i', database: d, spool_dir: s, "
                            "gzip: '${CASCADE_TEST_GZIP:-false}', batch_size: '100'}\n"
                            "alerting: {enabled: '${CASCADE_TEST_ALERTS}', actions: {retry_s: '2', "
                            "rules: {thermal_runaway: {'2': none}}}}\n")
    config = load_config(path)
    cabinet = config.cabinets[0]
    assert (cabinet.port, cabinet.interval_s, cabinet.slots) == (1502, 2.5, 4)
    assert type(cabinet.port) is int and type(cabinet.interval_s) is float
    assert (config.metrics_port, config.jitter) == (0, 0.0)
    assert config.influxdb is not None and config.influxdb.gzip is False and config.influxdb.batch_size == 100
    settings = alerting_settings(config)
    assert settings["enabled"] is False and settings["policy"].retry_s == 2.0
    assert settings["policy"].overrides == {("thermal_runaway", 2): None}


def test_sections_left_empty_are_left_out(tmp_path: Path) -> None:
    path = _write(tmp_path, "cabinets:\n  - {id: A, host: h}\nfleet_files:\ndefaults:\npoll:\nmetrics:\n"
                            "alerting:\n")
    config = load_config(path)
    assert (config.jitter, config.metrics_port, config.influxdb) == (0.1, 9108, None)
    assert alerting_settings(config)["enabled"] is True


def test_models_match_the_dataclasses_they_build() -> None:
    """A key added to CabinetConfig or InfluxConfig needs its model field (type, default, fix) too."""
    import dataclasses

    from cascade.config import Cabinet, InfluxSection
    from collectors.modbus.settings import CabinetConfig
    from exporters.influx.sink import InfluxConfig

    for model, cls in ((Cabinet, CabinetConfig), (InfluxSection, InfluxConfig)):
        assert list(model.model_fields) == [f.name for f in dataclasses.fields(cls)], model.__name__
        assert all(info.description for info in model.model_fields.values()), "every key needs its fix"


def test_docs_reference_is_generated_from_the_models() -> None:
    from cascade.config import config_reference

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    begin, end = "<!-- config_reference: begin -->\n", "<!-- config_reference: end -->"
    section = text[text.index(begin) + len(begin):text.index(end)]
    assert section == config_reference(), (
        "docs/configuration.md is out of date: paste the output of "
        "`.venv/bin/python -c \"from cascade.config import config_reference; print(config_reference(), end='')\"` "
        "between its config_reference markers")


# Run configurations built from the keys the models know, with hostile values anywhere.
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["", "15020", "0.5", "true", "false", "yes", "none", "v1", "v3", "ns", "http://x", "x:9",
                     "reference-cabinet", "high.yaml", "fleet.yaml", ".", "..", "C1", "slot_cutoff",
                     "thermal_runaway", "${CASCADE_TEST_UNSET}", "${CASCADE_TEST_UNSET:-7}", "a\nb", "\x00"]),
)


def _field_names(*models) -> list[str]:
    return sorted({name for model in models for name in model.model_fields})


def _keys():
    from cascade.config import ActionsSection, AlertingSection, Cabinet, InfluxSection, RunConfig

    known = _field_names(RunConfig, Cabinet, InfluxSection, AlertingSection, ActionsSection)
    return st.one_of(st.sampled_from([*known, "jitter", "backoff_cap_s", "thermal_runaway", "bogus"]),
                     st.integers(0, 4), st.text(max_size=5))


_docs = st.recursive(_values, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(_keys(), inner, max_size=5)),
                     max_leaves=30)


def _known_paths() -> list[tuple]:
    from cascade.config import ActionsSection, AlertingSection, Cabinet, InfluxSection, RunConfig

    paths: list[tuple] = [(name,) for name in RunConfig.model_fields]
    paths += [("cabinets", 0, name) for name in Cabinet.model_fields]
    paths += [("defaults", name) for name in Cabinet.model_fields]
    paths += [("poll", "jitter"), ("poll", "backoff_cap_s"), ("metrics", "host"), ("metrics", "port"),
              ("fleet_files", 0), ("alerting", "actions", "rules", "thermal_runaway", 2)]
    paths += [("influxdb", name) for name in InfluxSection.model_fields]
    paths += [("alerting", name) for name in AlertingSection.model_fields]
    paths += [("alerting", "actions", name) for name in ActionsSection.model_fields]
    return paths


# Paths into a valid configuration: a known key, a new key under one, or anything.
_paths = st.one_of(st.sampled_from(_known_paths()),
                   st.tuples(st.sampled_from(_known_paths()), _keys()).map(lambda pk: (*pk[0], pk[1])),
                   st.lists(_keys(), min_size=1, max_size=4).map(tuple))
_BASE = {"cabinets": [{"id": "A", "host": "h"}], "poll": {}, "metrics": {},
         "influxdb": {"url": "http://i", "database": "d", "spool_dir": "s"},
         "alerting": {"actions": {"rules": {"thermal_runaway": {2: "none"}}}}}


def _mutate(doc: Any, path: tuple, value: Any) -> Any:
    """``doc`` with ``value`` written at ``path`` (mappings made where needed, list items by index)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, list) and isinstance(head, int) and head < len(doc):
        return [_mutate(v, rest, value) if i == head else v for i, v in enumerate(doc)]
    base = dict(doc) if isinstance(doc, dict) else {}
    base[head] = _mutate(base.get(head), rest, value)
    return base


def _load_or_refuse(text: str) -> None:
    """Loading (and the alerting section) either works or raises one ConfigError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            alerting_settings(load_config(path))
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and " Fix: " in message, message
            assert message.startswith(f"{tmp}/"), message  # the config file or a fleet file next to it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs)
def test_any_yaml_document_loads_or_is_refused_with_config_error(doc: Any) -> None:
    _load_or_refuse(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_paths, st.one_of(_values, _docs)), min_size=1, max_size=3))
def test_a_valid_config_with_hostile_edits_loads_or_is_refused_with_config_error(edits) -> None:
    doc: Any = _BASE
    for path, value in edits:
        doc = _mutate(doc, path, value)
    _load_or_refuse(yaml.safe_dump(doc, allow_unicode=True))
