"""The run configuration (``cascade run --config FILE``), validated before the first poll.

Every section is a pydantic model (:mod:`core.validation`): unknown keys are errors at every level,
numbers may be written as text (``${PORT:-502}`` expands to ``"502"``) but never as ``true``, and
every error names the file, the dotted key and what to do, on one line. What a schema cannot say
(files exist, profiles load, read plans fit, cabinet ids are unique) is checked right after.
The ``alerting:`` section is validated by :func:`cascade.app.alerting_settings` with
:class:`AlertingSection`. See ``config/local.yaml`` for a commented example and
``docs/configuration.md`` for every key (its reference tables are :func:`config_reference`).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from annotated_types import MinLen
from pydantic import AfterValidator, BaseModel, BeforeValidator, model_validator

from alerting.rules import PROTECTIVE_ACTIONS
from collectors.modbus.device import KIND as MODBUS
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import Profile, ProfileError, find_profile
from collectors.modbus.settings import CabinetConfig, ModbusSettings
from collectors.vehicles.functions import VehicleFunctions, VehicleFunctionSettings
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.watch import KIND as VEHICLES
from collectors.vehicles.watch import VehicleWatchSettings
from core.env import expand_env
from core.errors import InputError
from core.validation import (
    Bool,
    Field,
    Float,
    Int,
    Model,
    Shown,
    default_text,
    one_line,
    shown_default,
    type_text,
    validate,
)
from exporters.influx.sink import InfluxConfig, InfluxConfigError

__all__ = ["ActionsSection", "AlertingSection", "ApiV1Section", "WebhookSubscriber", "AuthSection", "AppConfig", "Cabinet", "CabinetEntry", "ConfigError",
           "FleetFile", "InfluxSection", "MetricsSection", "PollSection", "RunConfig", "TlsSection",
           "config_reference", "load_config"]


class ConfigError(InputError):
    """A configuration that cannot be used; the message names the file, the key and the fix, on one line."""

    def __init__(self, source: str | Path, key: str, problem: str, fix: str) -> None:
        super().__init__(one_line(str(source)), one_line(key), one_line(problem), one_line(fix))




@dataclass(slots=True)
class AppConfig:
    """Everything ``cascade run`` needs."""

    source: str
    cabinets: list[CabinetConfig]
    profiles: dict[str, Profile]
    influxdb: InfluxConfig | None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    metrics_tls: TlsSection | None = None  # HTTPS only on the metrics port (metrics.tls; paths resolved)
    jitter: float = 0.1
    backoff_cap_s: float = 60.0
    status_interval_s: float = 10.0
    alerting: dict[str, Any] = field(default_factory=dict)
    vehicles: VehicleSettings | None = None  # vehicle ingest workers (`cascade ingest`)

    def source_settings(self) -> dict[str, object]:
        """Source kind → the settings its builder takes (``collectors.SOURCE_KINDS``).

        Cabinets are polled over Modbus; with a ``vehicles`` section (``watch: true``) the vehicle watch
        feeds every report of its fleets to the warning engine (collectors/vehicles/watch.py).
        """
        kinds: dict[str, object] = {
            MODBUS: ModbusSettings(self.cabinets, self.profiles, self.jitter, self.backoff_cap_s)}
        v = self.vehicles
        if v is not None and v.watch and v.mqtt is not None:
            # The fence centres of armed vehicles survive a restart beside the alert state (alerts.json ->
            # alerts-vehicle-fences.json): restored fence alerts are judged against the same centre.
            state = Path(str((self.alerting or {}).get("state_file") or "var/alerts.json"))
            kinds[VEHICLES] = VehicleWatchSettings(v.mqtt, v.devices, tuple(v.watch_fleets), v.replay_window_s,
                                                   v.functions,
                                                   fences_file=str(state.with_name(state.stem + "-vehicle-fences.json")))
        return kinds


# --- value types -------------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{value!r} contains a NUL character")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _none_word(value: Any) -> Any:
    return None if value == "none" else value


def _subscriber_name(value: str) -> str:
    if len(value) > 64 or not value.replace(".", "").replace("_", "").replace("-", "").isalnum() or not value.isascii():
        raise ValueError(f"{value[:70]!r} is not a name of letters, digits, '.', '_', '-' (at most 64)")
    return value


def _level(value: int) -> int:
    if value not in (1, 2, 3):
        raise ValueError(f"level {value} is not 1, 2 or 3. Fix: use level numbers 1-3")
    return value


Text = Annotated[str, MinLen(1)]
"""Non-empty text."""
PathText = Annotated[str, MinLen(1), AfterValidator(_no_nul), Shown("path")]
"""A file or directory; relative paths are relative to the configuration file."""
HttpUrl = Annotated[str, AfterValidator(_http_url), Shown("http(s) URL")]
ProtectiveAction = Literal[tuple(sorted(PROTECTIVE_ACTIONS))]  # type: ignore[valid-type]
Level = Annotated[Int, AfterValidator(_level), Shown("level 1..3")]
ActionOrNone = Annotated[ProtectiveAction | None, BeforeValidator(_none_word),  # type: ignore[valid-type]
                         Shown("a protective action or none")]


class _Section(Model):
    """A section in which a key written without a value (its lines commented out) is left out."""

    absent_if_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.absent_if_null:
            return {k: v for k, v in data.items() if not (k in cls.absent_if_null and v is None)}
        return data


# --- cabinets ----------------------------------------------------------------------------------

_CAB: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(CabinetConfig)}
_ID = "a unique cabinet id, e.g. C0001 (the cabinet tag and label)"
_HOST = "the Modbus TCP address of the cabinet, e.g. 10.20.0.11"


class CabinetEntry(_Section):
    """One cabinet as written (inline, in a fleet file, or as ``defaults``): every key optional."""

    id: Text | None = Field(default=None, description=_ID)
    host: Text | None = Field(default=None, description=_HOST)
    port: Int = Field(default=_CAB["port"], ge=1, le=65535, description="the Modbus TCP port, 1-65535, e.g. 502")
    device_id: Int = Field(
        default=_CAB["device_id"], ge=0, le=255,
        description="the Modbus unit id, 0-255 (cabinets behind one gateway differ only in this)")
    site: Text = Field(default=_CAB["site"], description="the site the cabinet belongs to (the site tag and label)")
    profile: PathText = Field(
        default=_CAB["profile"],
        description="a register profile: a name from profiles/ or a path to its YAML (docs/profiles.md)")
    slots: Int | None = Field(
        default=_CAB["slots"], ge=1, le=256, json_schema_extra=shown_default("the profile's"),
        description="the number of slots fitted, 1-256, or leave it out for the profile's")
    interval_s: Float = Field(default=_CAB["interval_s"], gt=0, description="seconds between polls, e.g. 5")
    fast_interval_s: Float | None = Field(
        default=_CAB["fast_interval_s"], gt=0,
        description="seconds between polls of the safety fields only (gas, smoke, flame, alarm and protection "
        "words, pack temperatures; docs/scaling.md), e.g. 1 (off when null or not below interval_s)")
    timeout_s: Float = Field(default=_CAB["timeout_s"], gt=0,
                             description="seconds to wait for each Modbus answer, e.g. 2")
    busy_retries: Int = Field(
        default=_CAB["busy_retries"], ge=0,
        description="retries when the device answers 'server busy' (the only retried answer), e.g. 3")
    busy_backoff_s: Float = Field(default=_CAB["busy_backoff_s"], ge=0,
                                  description="seconds before a busy retry, growing linearly, e.g. 0.05")
    max_gap: Int | None = Field(
        default=_CAB["max_gap"], ge=0, json_schema_extra=shown_default("the profile's"),
        description="unused registers a read may bridge (0 reads only mapped registers), or leave it out for the "
        "profile's")
    max_in_flight: Int = Field(
        default=_CAB["max_in_flight"], ge=1, le=32,
        description="Modbus requests sent before the first answer comes, 1-32: 1 waits for each answer (what "
        "every device takes); more pipelines a poll's reads, only for a device that queues requests (many answer "
        "the first and drop the rest): `cascade probe --pipelining` finds how many it takes; more than a poll's "
        "reads (`cascade check-config` shows them) gains nothing, e.g. 8")


class Cabinet(CabinetEntry):
    """A complete cabinet: an entry with ``defaults`` applied; ``id`` and ``host`` are required."""

    id: Text = Field(description=_ID)
    host: Text = Field(description=_HOST)


class FleetFile(Model):
    """A fleet file: ``cabinets:`` with one entry per cabinet (``cascade simulate`` writes one)."""

    cabinets: list[CabinetEntry] = Field(description="a list of cabinets, each {id, host, port, ...}")


# --- the other run sections -------------------------------------------------------------------


class PollSection(Model):
    """How the fleet is polled."""

    jitter: Float = Field(
        default=0.1, ge=0, lt=1,
        description="a fraction of the interval, 0 <= jitter < 1, e.g. 0.1 (so a fleet does not poll in lockstep)")
    backoff_cap_s: Float = Field(
        default=60.0, gt=0,
        description="the longest wait in seconds between reconnect attempts to a dead cabinet, e.g. 60")


class TlsSection(Model):
    """A listener's server certificate: with it the port speaks HTTPS only (docs/security.md, "TLS in production")."""

    cert_file: PathText = Field(description="the server certificate (PEM, with any intermediates), "
                                            "e.g. /run/secrets/tls_cert")
    key_file: PathText = Field(description="its private key (PEM, unencrypted), e.g. /run/secrets/tls_key")


class MetricsSection(Model):
    """Where Prometheus /metrics, /health and the alert HTTP API are served."""

    host: Text = Field(default="127.0.0.1",
                       description="the address to listen on, e.g. 127.0.0.1 (0.0.0.0 in a container)")
    port: Int = Field(default=9108, ge=0, le=65535, description="a TCP port number (0 = any free port)")
    tls: TlsSection | None = Field(
        default=None, json_schema_extra=shown_default("none: plain HTTP"),
        description="a mapping {cert_file, key_file}: serve HTTPS only (production; docs/security.md)")


_INFLUX: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(InfluxConfig)}
_SINK_DOC = "docs/influxdb-sink.md"


class InfluxSection(Model):
    """The InfluxDB sink (``exporters.influx.InfluxConfig``); its own rules are checked too."""

    url: HttpUrl = Field(description="the http(s)://host:port of the InfluxDB server, e.g. http://127.0.0.1:8086")
    # Not required here: a missing spool_dir is reported by the sink's own check, at key `influxdb`.
    spool_dir: str = Field(
        default="", json_schema_extra=shown_default("(required)"),
        description="a writable directory for readings kept while InfluxDB is down, e.g. ../var/spool")
    api: Literal["v1", "v2"] = Field(
        default=_INFLUX["api"],
        description="v1 (POST /write: InfluxDB 1.x, 2.x via DBRP, 3.x) or v2 (token/org/bucket)")
    database: str = Field(default=_INFLUX["database"], description="the database to write to (required with api v1)")
    retention_policy: str = Field(default=_INFLUX["retention_policy"],
                                  description="the v1 retention policy, or leave it out for the database's default")
    username: str = Field(default=_INFLUX["username"], description="v1 basic auth user (with password, or neither)")
    password: str = Field(default=_INFLUX["password"],
                          description="v1 basic auth password, usually ${CASCADE_INFLUX_PASSWORD}")
    token: str = Field(default=_INFLUX["token"], description="the v2 token (v1 without username: sent as 'Token ...')")
    org: str = Field(default=_INFLUX["org"], description="the v2 organisation (required with api v2)")
    bucket: str = Field(default=_INFLUX["bucket"], description="the v2 bucket (required with api v2)")
    batch_size: Int = Field(default=_INFLUX["batch_size"], ge=1, description="lines per write request, e.g. 5000")
    flush_interval_s: Float = Field(
        default=_INFLUX["flush_interval_s"], gt=0,
        description="the longest time in seconds a line waits in memory while the server is up, e.g. 1")
    gzip: Bool = Field(default=_INFLUX["gzip"], description="true or false: compress request bodies")
    max_buffer_lines: Int = Field(default=_INFLUX["max_buffer_lines"], ge=1,
                                  description="the in-memory bound in lines, >= batch_size")
    spool_max_bytes: Int = Field(default=_INFLUX["spool_max_bytes"], ge=64 * 1024,
                                 description="the disk spool bound in bytes, >= 65536")
    timeout_s: Float = Field(default=_INFLUX["timeout_s"], gt=0,
                             description="seconds per request and for the final flush")
    precision: Literal["ns"] = Field(default=_INFLUX["precision"], description="ns (the encoder writes nanoseconds)")
    retry_initial_s: Float = Field(
        default=_INFLUX["retry_initial_s"], gt=0,
        description="the first retry wait in seconds while the server is down, e.g. 0.5")
    retry_max_s: Float = Field(default=_INFLUX["retry_max_s"], gt=0,
                               description="the longest retry wait in seconds, >= retry_initial_s")

    def sink_config(self, spool_dir: str | None = None) -> InfluxConfig:
        """The sink's own config; ``spool_dir`` replaces the written one (made relative to the file)."""
        values = self.model_dump()
        if spool_dir is not None:
            values["spool_dir"] = spool_dir
        return InfluxConfig(**values)

    @model_validator(mode="after")
    def _sink_accepts_it(self) -> InfluxSection:
        try:
            self.sink_config().validate()
        except InfluxConfigError as err:  # "influx.KEY: why (got value)"
            raise ValueError(f"{str(err).removeprefix('influx.')}. Fix: see {_SINK_DOC}") from None
        return self


# --- alerting ------------------------------------------------------------------------------------

_ACTIONS = sorted(PROTECTIVE_ACTIONS)


class ActionsSection(_Section):
    """``alerting.actions``: which protective actions are carried out."""

    absent_if_null = ("rules",)

    perform: list[ProtectiveAction] = Field(  # type: ignore[valid-type]
        default=_ACTIONS, description=f"list some of {_ACTIONS} ([] = observe only)")
    rules: dict[Text, dict[Level, ActionOrNone]] = Field(
        default={},
        description=f"per catalogue rule and level 1-3: one of {_ACTIONS} or none, "
        "e.g. {thermal_runaway: {2: none}}")
    retry_s: Float = Field(default=10.0, gt=0, description="seconds between retries of a failed action, e.g. 10")


_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_ROLES = ("viewer", "regulator", "operator", "engineer", "admin")


class AuthSection(_Section):
    """``alerting.auth``: who may call the alert API — OAuth 2.0 / OIDC bearer tokens (docs/security.md)."""

    absent_if_null = ("issuer", "jwks_url")

    issuer: HttpUrl | None = Field(
        default=None,
        description="the OpenID Connect issuer whose tokens the API accepts (their iss), e.g. "
                    "https://sso.example/realms/cascade or http://127.0.0.1:9140 (`cascade issuer`); leave it out "
                    "for no tokens (then only api_token, or nothing on loopback)")
    audience: Text = Field(default="cascade-api", description="the aud a token must name, e.g. cascade-api")
    jwks_url: HttpUrl | None = Field(
        default=None, json_schema_extra=shown_default("the jwks_uri of the issuer's openid-configuration"),
        description="where the issuer's signing keys are published, or leave it out to discover them")
    roles_claim: Text = Field(default="roles",
                              description="the dotted claim holding the roles, e.g. roles or realm_access.roles")
    subject_claim: Text = Field(default="sub",
                                description="the claim recorded as who acted, e.g. sub or preferred_username")
    leeway_s: Float = Field(default=60.0, ge=0, le=300, description="seconds of clock skew allowed, 0..300")
    algorithms: list[Literal[_ALGORITHMS]] = Field(  # type: ignore[valid-type]
        default=["RS256", "ES256", "PS256", "EdDSA"], min_length=1,
        description=f"signature algorithms accepted, some of {list(_ALGORITHMS)} (never none or HS*)")
    jwks_cache_s: Float = Field(default=3600.0, gt=0, description="seconds the signing keys are cached, e.g. 3600")
    jwks_min_refresh_s: Float = Field(
        default=10.0, ge=0, description="at most one fetch of the keys per this many seconds for unknown key ids")
    accept_api_token: Bool = Field(
        default=False, description="true: also accept alerting.api_token (deprecated) next to tokens")
    api_token_role: Literal[_ROLES] = Field(  # type: ignore[valid-type]
        default="engineer", description=f"the role the shared api_token acts with, one of {list(_ROLES)}")


class WebhookSubscriber(_Section):
    """``alerting.webhooks[]``: a third party that receives every alert level change, signed (docs/api.md)."""

    absent_if_null = ("secret_file", "secret_env")

    name: Annotated[Text, AfterValidator(_subscriber_name)] = Field(
        description="a name for the delivery log, e.g. city-platform (letters, digits, . _ -; at most 64)")
    url: HttpUrl = Field(description="where the signals are POSTed, e.g. https://platform.example/cascade/hook")
    secret_file: PathText | None = Field(
        default=None, description="a file holding the HMAC secret (at least 16 characters), e.g. "
                                  "../secrets/webhook-city-platform; or secret_env")
    secret_env: Text | None = Field(default=None, description="an environment variable holding the secret instead")
    levels: list[Level] = Field(default=[1, 2, 3], min_length=1,
                                description="the levels sent (a clear goes with the level it leaves), e.g. [2, 3]")
    timeout_s: Float = Field(default=5.0, gt=0, le=60, description="seconds one attempt may take, e.g. 5")
    max_attempts: Int = Field(default=6, ge=1, le=20, description="attempts per signal, the first included, e.g. 6")
    backoff_s: Float = Field(default=1.0, gt=0, le=600, description="seconds before the first retry; doubles, e.g. 1")
    backoff_cap_s: Float = Field(default=60.0, gt=0, le=3600, description="the longest wait between attempts, e.g. 60")

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSubscriber:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("give the secret as exactly one of secret_file or secret_env. Fix: e.g. "
                             "secret_file: ../secrets/webhook-" + self.name)
        return self


class ApiV1Section(_Section):
    """``alerting.api_v1``: limits of the third-party API (docs/api.md)."""

    rate_per_s: Float = Field(default=10.0, gt=0, le=10_000,
                              description="requests a second per client (token subject, else address), e.g. 10")
    burst: Int = Field(default=50, ge=1, le=100_000, description="requests a client may send at once, e.g. 50")


class AlertingSection(Model):
    """``alerting:``: tiered warnings, the alert service and protective actions (docs/alert-service.md)."""

    enabled: Bool = Field(default=True,
                          description="true or false (false: no engine, no alert service, no routes)")
    rules: PathText | None = Field(
        default=None, json_schema_extra=shown_default("the shipped catalogue"),
        description="a rule file (docs/warnings.md), or leave it out for the shipped catalogue")
    state_file: PathText = Field(default="var/alerts.json",
                                 description="where active alerts and acks are kept, e.g. var/alerts.json")
    audit_file: PathText = Field(
        default="var/threshold-audit.jsonl",
        description="where run-time threshold changes are logged, e.g. var/threshold-audit.jsonl")
    alertmanager_url: HttpUrl | None = Field(
        default="http://127.0.0.1:9093",
        description="e.g. http://127.0.0.1:9093, or null to push nothing (evaluate and act only)")
    resend_interval_s: Float = Field(default=60.0, gt=0,
                                     description="seconds between re-sends to Alertmanager, e.g. 60")
    escalate_after_s: Float | None = Field(
        default=600.0, ge=30,
        description="seconds a level-3 alert may stay unacknowledged before it also pages the next on-call "
                    "(receiver critical-escalation), e.g. 600; null = never")
    offline_after_s: Float | None = Field(
        default=None, ge=10, json_schema_extra=shown_default("2 × interval_s + timeout_s, per cabinet"),
        description="seconds without a reading before a cabinet raises cabinet_offline (its safety sensors are "
                    "unwatched): level 2 if it was charging, 1 if idle; leave it out for two poll intervals plus "
                    "the request timeout of each cabinet (at least 10)")
    generator_url: Text | None = Field(
        default=None, description="a link shown as the alert's source (e.g. a Grafana dashboard), or leave it out")
    actions: ActionsSection = Field(default=ActionsSection(), json_schema_extra=shown_default("see alerting.actions"),
                                    description="a mapping, e.g. {perform: [stop_charging], retry_s: 10}")
    language: Literal["zh_CN", "en"] = Field(
        default="zh_CN", description="the language of alert texts (summary, diagnosis, action): zh_CN or en")
    api_token: Text | None = Field(
        default=None,
        description="deprecated shared bearer token for ack and set-threshold, usually ${CASCADE_API_TOKEN}; with "
        "auth.issuer only accepted when auth.accept_api_token is true")
    auth: AuthSection = Field(default=AuthSection(), json_schema_extra=shown_default("see alerting.auth"),
                              description="a mapping, e.g. {issuer: http://127.0.0.1:9140, audience: cascade-api}")
    control_audit_file: PathText = Field(
        default="var/control-audit.jsonl",
        description="where remote cabinet commands are logged (append-only), e.g. var/control-audit.jsonl")
    api_v1: ApiV1Section = Field(default=ApiV1Section(), json_schema_extra=shown_default("see alerting.api_v1"),
                                 description="a mapping, e.g. {rate_per_s: 10, burst: 50} (docs/api.md)")
    webhooks: list[WebhookSubscriber] = Field(
        default=[], description="warning-signal subscribers, each {name, url, secret_file or secret_env, levels} "
                                "(docs/api.md)")
    webhook_log_file: PathText = Field(
        default="var/webhook-deliveries.jsonl",
        description="where every webhook delivery attempt is logged, e.g. var/webhook-deliveries.jsonl")


# --- the file ------------------------------------------------------------------------------------


class RunConfig(_Section):
    """A run configuration file as written (before fleet files, defaults and profiles)."""

    absent_if_null = ("cabinets", "fleet_files", "defaults", "poll", "metrics", "alerting")

    cabinets: list[CabinetEntry] = Field(
        default=[], json_schema_extra={"shown_type": "list of cabinets"},
        description="a list of cabinets, each {id, host, port, ...} (see the cabinet keys)")
    fleet_files: list[PathText] = Field(
        default=[], description="a list of files with cabinets: (the simulator writes one), e.g. [../var/fleet.yaml]")
    defaults: CabinetEntry = Field(default=CabinetEntry(), json_schema_extra=shown_default("`{}`"),
                                   description="cabinet keys merged into every cabinet entry, e.g. {interval_s: 5}")
    poll: PollSection = Field(default=PollSection(), json_schema_extra=shown_default("see poll"),
                              description="a mapping, e.g. {jitter: 0.1, backoff_cap_s: 60}")
    influxdb: InfluxSection | None = Field(
        default=None, json_schema_extra=shown_default("none: no storage"),
        description="a mapping, e.g. {url: http://127.0.0.1:8086, database: cascade, spool_dir: ../var/spool} "
        f"({_SINK_DOC})")
    metrics: MetricsSection = Field(default=MetricsSection(), json_schema_extra=shown_default("see metrics"),
                                    description="a mapping, e.g. {host: 127.0.0.1, port: 9108}")
    status_interval_s: Float = Field(default=10.0, ge=0,
                                     description="seconds between one-line status logs (0 = off)")
    alerting: dict[str, Any] = Field(
        default={}, json_schema_extra={"shown_default": "see alerting", "shown_type": "mapping"},
        description="a mapping of the alerting keys (docs/alert-service.md#configuration)")
    vehicles: VehicleSettings | None = Field(
        default=None, json_schema_extra=shown_default("none: no vehicle ingest"),
        description="vehicle ingest over MQTT and HTTPS for `cascade ingest` (docs/vehicles.md)")

# --- loading -------------------------------------------------------------------------------------

_PATH_KEYS = {"state_file", "audit_file", "rules", "control_audit_file", "webhook_log_file"}


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
    except UnicodeDecodeError as err:
        raise ConfigError(path, key, f"not UTF-8 text ({err.reason})", "save the file as UTF-8 YAML") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(path, key, f"not valid YAML{at}: {problem}", "fix the YAML syntax") from err


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long: reading it reports the error
        return True


def _fleet_entries(source: Path, run: RunConfig) -> list[tuple[Path, str, CabinetEntry]]:
    """Every cabinet entry, inline and from fleet files, with the file and key it came from."""
    entries = [(source, f"cabinets[{i}]", entry) for i, entry in enumerate(run.cabinets)]
    for i, name in enumerate(run.fleet_files):
        fleet_path = _relative_to(source, name)
        if not _exists(fleet_path):
            raise ConfigError(source, f"fleet_files[{i}]", f"{fleet_path} does not exist",
                              "start the simulator first (it writes the fleet file) or fix the path")
        doc = _read_yaml(fleet_path)
        if isinstance(doc, list):  # a bare list of cabinets
            doc = {"cabinets": doc}
        if not isinstance(doc, dict):
            raise ConfigError(fleet_path, "(top level)", f"expected cabinets: with a list, got {doc!r:.60}",
                              "see docs/configuration.md")
        fleet = validate(FleetFile, doc, fleet_path, error=ConfigError)
        entries.extend((fleet_path, f"cabinets[{j}]", entry) for j, entry in enumerate(fleet.cabinets))
    return entries


def _profile(name: str, entry_source: Path, key: str, profiles: dict[str, Profile]) -> Profile:
    if name not in profiles:
        ref = name
        if ref.endswith((".yaml", ".yml")) and not Path(ref).is_absolute():
            candidate = entry_source.parent / ref
            ref = str(candidate) if _exists(candidate) else ref
        try:
            profiles[name] = find_profile(ref)
        except ProfileError as err:
            # The profile's own error, with its own fix (not a second "Fix:" of ours).
            where = ": ".join(p for p in (err.source, err.key) if p)
            raise ConfigError(entry_source, f"{key}.profile", f"{where}: {err.problem}" if where else err.problem,
                              err.fix or "fix the profile or its name") from err
        except OSError as err:
            raise ConfigError(entry_source, f"{key}.profile", f"cannot read {ref}: {err.strerror}",
                              "fix the profile or its name") from err
        except UnicodeDecodeError as err:
            raise ConfigError(entry_source, f"{key}.profile", f"{ref} is not a UTF-8 text file",
                              "give a profile YAML file or a name from profiles/") from err
    return profiles[name]


def load_config(path: str | Path) -> AppConfig:
    """Load ``path``, its fleet files and every profile they name; raise :class:`ConfigError`."""
    source = Path(path)
    doc = _read_yaml(source)
    if not isinstance(doc, dict):
        raise ConfigError(source, "(top level)", f"expected a mapping of sections, got {doc!r:.60}",
                          "see config/local.yaml and docs/configuration.md")
    run = validate(RunConfig, doc, source, error=ConfigError)

    defaults = run.defaults.model_dump(exclude_unset=True)
    entries = _fleet_entries(source, run)
    if not entries:
        raise ConfigError(source, "cabinets", "no cabinets configured", "list cabinets or fleet_files")
    cabinets: list[CabinetConfig] = []
    profiles: dict[str, Profile] = {}
    seen: dict[str, str] = {}
    for entry_source, key, entry in entries:
        cabinet = validate(Cabinet, {**defaults, **entry.model_dump(exclude_unset=True)}, entry_source, key=key,
                           error=ConfigError)
        if cabinet.id in seen:
            raise ConfigError(entry_source, f"{key}.id", f"cabinet {cabinet.id!r} is listed twice "
                              f"(first at {seen[cabinet.id]})", "give every cabinet a unique id")
        seen[cabinet.id] = f"{entry_source}: {key}"
        profile = _profile(cabinet.profile, entry_source, key, profiles)
        try:  # the read plan is built at start-up anyway: a slot count the map cannot hold fails here
            plan_reads(profile, cabinet.slots, max_gap=cabinet.max_gap)
        except ValueError as err:
            raise ConfigError(entry_source, key, str(err), "check slots and max_gap against the profile") from err
        cabinets.append(CabinetConfig(**cabinet.model_dump()))

    influx = None
    if run.influxdb is not None:
        influx = run.influxdb.sink_config(spool_dir=str(_relative_to(source, run.influxdb.spool_dir)))
    alerting = {key: str(_relative_to(source, value)) if key in _PATH_KEYS and isinstance(value, str) and value
                else value for key, value in run.alerting.items()}
    if isinstance(alerting.get("webhooks"), list):  # each subscriber's secret file, relative to this file too
        alerting["webhooks"] = [
            {**hook, "secret_file": str(_relative_to(source, hook["secret_file"]))}
            if isinstance(hook, dict) and isinstance(hook.get("secret_file"), str) and hook["secret_file"] else hook
            for hook in alerting["webhooks"]]
    vehicles = run.vehicles
    if vehicles is not None:
        vehicles = _vehicle_paths(source, vehicles)
    metrics_tls = run.metrics.tls
    if metrics_tls is not None:  # loaded by the pipeline before it listens (server_tls_context)
        metrics_tls = TlsSection(cert_file=str(_relative_to(source, metrics_tls.cert_file)),
                                 key_file=str(_relative_to(source, metrics_tls.key_file)))
    return AppConfig(source=str(source), cabinets=cabinets, profiles=profiles, influxdb=influx,
                     metrics_host=run.metrics.host, metrics_port=run.metrics.port, metrics_tls=metrics_tls,
                     jitter=run.poll.jitter,
                     backoff_cap_s=run.poll.backoff_cap_s, status_interval_s=run.status_interval_s,
                     alerting=alerting, vehicles=vehicles)


def server_tls_context(cert_file: str | Path, key_file: str | Path, *, source: str | Path,
                       key: str) -> ssl.SSLContext:
    """The TLS context of an HTTPS listener (``web.TCPSite(..., ssl_context=...)``), TLS 1.2 at least. Built
    before the listener starts, so a missing or mismatched certificate stops the start, naming ``key`` in
    ``source``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(source, key, f"cannot load certificate {cert_file} with key {key_file}: {err}",
                          "name a readable PEM certificate and its private key (scripts/make-certs makes a test "
                          "pair; docs/security.md, \"TLS in production\")") from err
    return context


def _vehicle_paths(source: Path, vehicles: VehicleSettings) -> VehicleSettings:
    """File names in the vehicles section, relative to the configuration file."""
    def rel(value: str) -> str:
        return str(_relative_to(source, value)) if value else value

    update: dict[str, Any] = {"devices": rel(vehicles.devices)}
    if vehicles.mqtt is not None:
        update["mqtt"] = vehicles.mqtt.model_copy(update={"tls_ca": rel(vehicles.mqtt.tls_ca)})
    if vehicles.https is not None:
        update["https"] = vehicles.https.model_copy(update={"cert": rel(vehicles.https.cert),
                                                            "key": rel(vehicles.https.key)})
    return vehicles.model_copy(update=update)


# --- reference docs ------------------------------------------------------------------------------

_REFERENCE: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Top level", RunConfig),
    ("Cabinet keys (`cabinets[]`, fleet files, `defaults`)", Cabinet),
    ("`poll`", PollSection),
    ("`metrics`", MetricsSection),
    ("`metrics.tls`", TlsSection),
    ("`influxdb`", InfluxSection),
    ("`alerting`", AlertingSection),
    ("`alerting.actions`", ActionsSection),
    ("`alerting.auth`", AuthSection),
    ("`alerting.api_v1`", ApiV1Section),
    ("`alerting.webhooks[]`", WebhookSubscriber),
    ("`vehicles`", VehicleSettings),
    ("`vehicles.mqtt`", MqttSettings),
    ("`vehicles.https`", HttpsSettings),
    ("`vehicles.functions`", VehicleFunctions),
    ("`vehicles.functions.defaults`, `vehicles.functions.vehicles.<id>`", VehicleFunctionSettings),
)
def config_reference() -> str:
    """The key tables of docs/configuration.md ("Reference"), generated from the models here."""
    lines: list[str] = []
    for title, model in _REFERENCE:
        lines += [f"### {title}", "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kind = str(extra.get("shown_type") or type_text(info.annotation, list(info.metadata)))
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {default_text(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def read_plans(config: AppConfig) -> list[dict[str, Any]]:
    """The Modbus read plan of every (profile, slots, max_gap) the configuration's cabinets use:
    which registers each poll reads, in how many requests, and which fields each read carries.
    What ``cascade check-config`` prints (``--json``: this list as is)."""
    from collectors.modbus.planner import minimum_reads, plan_reads

    groups: dict[tuple[str, int | None, int | None], list[str]] = {}
    in_flight: dict[tuple[str, int | None, int | None], set[int]] = {}
    for cabinet in config.cabinets:
        key = (cabinet.profile, cabinet.slots, cabinet.max_gap)
        groups.setdefault(key, []).append(cabinet.id)
        in_flight.setdefault(key, set()).add(cabinet.max_in_flight)
    plans = []
    for (name, slots, max_gap), ids in groups.items():
        profile = config.profiles[name]
        slot_count = slots or profile.slot_count
        plan = plan_reads(profile, slot_count, max_gap=max_gap)
        plans.append({
            "profile": name, "source": str(profile.source), "cabinets": ids, "slots": slot_count,
            "max_gap": profile.max_gap if max_gap is None else max_gap, "requests": len(plan),
            "minimum_requests": minimum_reads(profile, slot_count),
            "max_in_flight": sorted(in_flight[(name, slots, max_gap)]),  # the values these cabinets set
            "commands": sorted(profile.commands),
            "reads": [{"register": r.register_type, "address": r.address, "count": r.count,
                       "fields": [f"{'cabinet' if f.slot is None else f'slot {f.slot}'}:{f.label}"
                                  for f in r.fields]} for r in plan],
        })
    return plans
