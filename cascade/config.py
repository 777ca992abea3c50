"""The run configuration (``cascade run --config FILE``), validated before the first poll.

Every error names the file, the key and what to do. See ``config/local.yaml`` for a commented
example and ``docs/configuration.md`` for every key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collectors.modbus.device import KIND as MODBUS
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import Profile, ProfileError, find_profile
from collectors.modbus.settings import CabinetConfig, ModbusSettings
from core.env import expand_env
from core.errors import InputError
from exporters.influx.sink import InfluxConfig

__all__ = ["AppConfig", "ConfigError", "load_config"]


class ConfigError(InputError):
    """A configuration that cannot be used; the message names the file, the key and the fix."""


@dataclass(slots=True)
class AppConfig:
    """Everything ``cascade run`` needs."""

    source: str
    cabinets: list[CabinetConfig]
    profiles: dict[str, Profile]
    influxdb: InfluxConfig | None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    jitter: float = 0.1
    backoff_cap_s: float = 60.0
    status_interval_s: float = 10.0
    alerting: dict[str, Any] = field(default_factory=dict)

    def source_settings(self) -> dict[str, object]:
        """Source kind → the settings its builder takes (``collectors.SOURCE_KINDS``).

        Today every cabinet is polled over Modbus; pushed kinds add their own entry here.
        """
        return {MODBUS: ModbusSettings(self.cabinets, self.profiles, self.jitter, self.backoff_cap_s)}


_PATH_KEYS = {"state_file", "audit_file", "rules"}


def _relative_to(source: Path, value: str) -> Path:
    """Paths in a config file are relative to that file, not to wherever the command runs."""
    path = Path(value)
    return path if path.is_absolute() else source.parent / path


def _expand_env(value: Any, source: Path, env: Mapping[str, str]) -> Any:
    """``${NAME}`` / ``${NAME:-default}`` expanded everywhere; an unset one names its key."""
    return expand_env(value, env, on_missing=lambda err: ConfigError(
        source, err.key, str(err), f"export {err.name}, or write ${{{err.name}:-default}}"))


def _read_yaml(path: Path, key: str = "(file)") -> Any:
    try:
        return _expand_env(yaml.safe_load(path.read_text(encoding="utf-8")), path, os.environ)
    except OSError as err:
        raise ConfigError(path, key, f"cannot read {path}: {err.strerror}", "check the path") from err
    except yaml.YAMLError as err:
        raise ConfigError(path, key, f"not valid YAML: {err}", "fix the YAML syntax") from err


def _build(cls: type, values: Any, source: Path, key: str, fix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(source, key, f"expected a mapping, got {values!r}", fix)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in values:
        if name not in known:
            raise ConfigError(source, f"{key}.{name}", "unknown key", f"use one of {sorted(known)}")
    try:
        obj = cls(**values)
    except TypeError as err:
        raise ConfigError(source, key, str(err), fix) from err
    for name, value in values.items():
        expected = known[name].type if isinstance(known[name].type, str) else ""
        if "float" in expected and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(source, f"{key}.{name}", f"{value!r} is not a number", "give a number")
        if expected.startswith("int") and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(source, f"{key}.{name}", f"{value!r} is not an integer", "give an integer")
        if expected == "str" and not isinstance(value, str):
            raise ConfigError(source, f"{key}.{name}", f"{value!r} is not text", "quote the value")
    return obj


def load_config(path: str | Path) -> AppConfig:
    """Load ``path``, its fleet files and every profile they name; raise :class:`ConfigError`."""
    source = Path(path)
    doc = _read_yaml(source)
    if not isinstance(doc, dict):
        raise ConfigError(source, "(top level)", "expected a mapping", "see config/local.yaml")
    known = {"cabinets", "fleet_files", "defaults", "influxdb", "metrics", "poll", "status_interval_s", "alerting"}
    for key in doc:
        if key not in known:
            raise ConfigError(source, key, "unknown key", f"use one of {sorted(known)}")

    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(source, "defaults", "expected a mapping", "e.g. defaults: {interval_s: 5}")
    entries: list[tuple[Path, str, Any]] = []
    for key in ("cabinets", "fleet_files"):
        if not isinstance(doc.get(key) or [], list):
            raise ConfigError(source, key, f"expected a list, got {doc[key]!r}", "see docs/configuration.md")
    for i, entry in enumerate(doc.get("cabinets") or []):
        entries.append((source, f"cabinets[{i}]", entry))
    for i, name in enumerate(doc.get("fleet_files") or []):
        if not isinstance(name, str) or not name:
            raise ConfigError(source, f"fleet_files[{i}]", f"{name!r} is not a path", "e.g. fleet.yaml")
        fleet_path = (source.parent / name) if not Path(name).is_absolute() else Path(name)
        if not fleet_path.exists():
            raise ConfigError(source, f"fleet_files[{i}]", f"{fleet_path} does not exist",
                              "start the simulator first (it writes the fleet file) or fix the path")
        fleet = _read_yaml(fleet_path)
        items = fleet.get("cabinets") if isinstance(fleet, dict) else fleet
        if not isinstance(items, list):
            raise ConfigError(fleet_path, "cabinets", "expected a list of cabinets", "see docs/configuration.md")
        entries.extend((fleet_path, f"cabinets[{j}]", e) for j, e in enumerate(items))
    if not entries:
        raise ConfigError(source, "cabinets", "no cabinets configured", "list cabinets or fleet_files")

    cabinets: list[CabinetConfig] = []
    profiles: dict[str, Profile] = {}
    seen: set[str] = set()
    for entry_source, key, entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError(entry_source, key, f"expected a mapping, got {entry!r}", "give id, host, port")
        merged = {**defaults, **entry}
        cabinet = _build(CabinetConfig, merged, entry_source, key, "each cabinet needs id and host")
        if cabinet.id in seen:
            raise ConfigError(entry_source, f"{key}.id", f"cabinet {cabinet.id!r} is listed twice",
                              "give every cabinet a unique id")
        seen.add(cabinet.id)
        if cabinet.interval_s <= 0 or cabinet.timeout_s <= 0:
            raise ConfigError(entry_source, key, "interval_s and timeout_s must be positive", "e.g. interval_s: 5")
        if cabinet.busy_retries < 0 or cabinet.busy_backoff_s < 0:
            raise ConfigError(entry_source, key, "busy_retries and busy_backoff_s cannot be negative",
                              "e.g. busy_retries: 3")
        if cabinet.slots is not None and not 1 <= cabinet.slots <= 256:
            raise ConfigError(entry_source, f"{key}.slots", f"{cabinet.slots}", "use 1..256 (or leave it out)")
        if cabinet.profile not in profiles:
            profile_ref = cabinet.profile
            if profile_ref.endswith((".yaml", ".yml")) and not Path(profile_ref).is_absolute():
                candidate = entry_source.parent / profile_ref
                profile_ref = str(candidate) if candidate.exists() else profile_ref
            try:
                profiles[cabinet.profile] = find_profile(profile_ref)
            except ProfileError as err:
                raise ConfigError(entry_source, f"{key}.profile", str(err), "fix the profile or its name") from err
        try:  # the read plan is built at start-up anyway: a slot count the map cannot hold fails here
            plan_reads(profiles[cabinet.profile], cabinet.slots, max_gap=cabinet.max_gap)
        except ValueError as err:
            raise ConfigError(entry_source, key, str(err), "check slots and max_gap against the profile") from err
        cabinets.append(cabinet)

    influx_doc = doc.get("influxdb")
    influx = None
    if isinstance(influx_doc, dict) and isinstance(influx_doc.get("spool_dir"), str):
        influx_doc = {**influx_doc, "spool_dir": str(_relative_to(source, influx_doc["spool_dir"]))}
    if influx_doc is not None:
        influx = _build(InfluxConfig, influx_doc, source, "influxdb", "see docs/influxdb-sink.md")
        try:
            influx.validate()
        except ValueError as err:
            raise ConfigError(source, "influxdb", str(err), "see docs/influxdb-sink.md") from err

    metrics = doc.get("metrics") or {}
    poll = doc.get("poll") or {}
    for name, section, allowed in (("metrics", metrics, {"host", "port"}),
                                   ("poll", poll, {"jitter", "backoff_cap_s"})):
        if not isinstance(section, dict):
            raise ConfigError(source, name, "expected a mapping", f"keys: {sorted(allowed)}")
        for key in section:
            if key not in allowed:
                raise ConfigError(source, f"{name}.{key}", "unknown key", f"use one of {sorted(allowed)}")
    jitter = poll.get("jitter", 0.1)
    if not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
        raise ConfigError(source, "poll.jitter", f"{jitter!r}", "a fraction of the interval, 0 <= jitter < 1")
    port = metrics.get("port", 9108)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(source, "metrics.port", f"{port!r}", "a TCP port number (0 = any free port)")
    alerting = doc.get("alerting") or {}
    if not isinstance(alerting, dict):
        raise ConfigError(source, "alerting", "expected a mapping", "see docs/warnings.md")
    alerting = {key: str(_relative_to(source, value)) if key in _PATH_KEYS and isinstance(value, str) else value
                for key, value in alerting.items()}
    return AppConfig(source=str(source), cabinets=cabinets, profiles=profiles, influxdb=influx,
                     metrics_host=str(metrics.get("host", "127.0.0.1")), metrics_port=port, jitter=float(jitter),
                     backoff_cap_s=float(poll.get("backoff_cap_s", 60.0)),
                     status_interval_s=float(doc.get("status_interval_s", 10.0)), alerting=alerting)
