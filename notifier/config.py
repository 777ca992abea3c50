"""Notifier configuration: load the YAML file, resolve ``${ENV}`` secrets, validate everything at start-up.

A wrong notifier config is found when the first critical alert fails to page someone, so every
check happens here, before the server listens, and every error names the file, the key and the fix.

Secrets never live in the file: token, password, secret and username fields must be ``${ENV_VAR}``
references, resolved from the environment when the config is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.env import MissingEnv, expand_text
from core.errors import CascadeError

from .templates import Template, TemplateError, compile_template

__all__ = [
    "CHANNELS",
    "ConfigError",
    "Delivery",
    "HttpAuth",
    "HttpProvider",
    "NotifierConfig",
    "RetryPolicy",
    "SmtpProvider",
    "load_config",
    "parse_config",
]

# Channel names become a metric label; a closed set keeps cardinality bounded and typos loud.
CHANNELS = ("app", "sms", "voice", "email", "feed")
_SECRET_KEYS = ("token", "password", "secret", "username")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LEVELS = ("1", "2", "3")


class ConfigError(CascadeError):
    """A configuration problem; the message names file, key and what to change."""

    def __init__(self, source: str, key: str, problem: str, fix: str) -> None:
        super().__init__(problem, source=source, key=key, fix=fix, message=f"{source}: {key}: {problem} - {fix}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class HttpAuth:
    type: str  # none | bearer | basic | hmac
    token: str = ""
    username: str = ""
    password: str = ""
    secret: str = ""
    signature_header: str = "X-Cascade-Signature"
    timestamp_header: str = "X-Cascade-Timestamp"


@dataclass(frozen=True)
class HttpProvider:
    name: str
    method: str
    url: Template
    headers: dict[str, Template]
    body: Any  # Template, nested dict/list of Templates, or None
    body_format: str  # json | form | text
    auth: HttpAuth
    type: str = "http"


@dataclass(frozen=True)
class SmtpProvider:
    name: str
    host: str
    port: int
    starttls: bool
    sender: str
    subject: Template
    body: Template
    username: str = ""
    password: str = ""
    type: str = "smtp"


@dataclass(frozen=True)
class Delivery:
    """One channel of one receiver: which provider, to whom, for which levels and statuses."""

    channel: str
    provider: str
    recipients: tuple[str, ...]
    levels: frozenset[str] = frozenset(_LEVELS)
    send_resolved: bool = True


@dataclass(frozen=True)
class NotifierConfig:
    providers: dict[str, HttpProvider | SmtpProvider]
    receivers: dict[str, tuple[Delivery, ...]]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 8
    delivery_log: str | None = None
    source: str = "<config>"


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> NotifierConfig:
    """Read and validate the notifier YAML at ``path``; raise ConfigError saying what to fix."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(source, "(file)", f"cannot read: {err.strerror}",
                          "pass --config pointing at a notifier YAML (see config/notifier.example.yaml)") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(source, "(file)", f"not valid YAML: {err}", "fix the YAML syntax") from err
    config = parse_config(data, source=source, env=os.environ if env is None else env)
    if config.delivery_log and not Path(config.delivery_log).is_absolute():
        # Like every Cascade config: relative paths are relative to the file, not the working directory.
        config = dataclasses.replace(config, delivery_log=str(Path(path).parent / config.delivery_log))
    return config


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> NotifierConfig:
    """Validate an already-parsed config mapping (tests build these in code)."""
    env = os.environ if env is None else env
    root = _Node(data, source, "", env)
    root.require_mapping()
    root.reject_unknown({"notifier", "providers", "receivers"})
    settings = root.child("notifier", default={})
    settings.require_mapping()
    settings.reject_unknown({"concurrency", "delivery_log", "retry"})
    retry_node = settings.child("retry", default={})
    retry_node.require_mapping()
    retry_node.reject_unknown({"attempts", "initial_delay_s", "max_delay_s", "timeout_s"})
    retry = RetryPolicy(
        attempts=retry_node.child("attempts", default=4).integer(minimum=1),
        initial_delay_s=retry_node.child("initial_delay_s", default=0.5).number(minimum=0),
        max_delay_s=retry_node.child("max_delay_s", default=30.0).number(minimum=0),
        timeout_s=retry_node.child("timeout_s", default=10.0).number(minimum=0.001),
    )
    concurrency = settings.child("concurrency", default=8).integer(minimum=1)
    log_node = settings.child("delivery_log", default=None)
    delivery_log = None if log_node.value is None else log_node.string()

    providers_node = root.child("providers")
    providers_node.require_mapping(nonempty=True)
    providers = {name: _parse_provider(name, node) for name, node in providers_node.items()}

    receivers_node = root.child("receivers")
    receivers_node.require_mapping(nonempty=True)
    receivers = {}
    for name, node in receivers_node.items():
        node.require_list()
        receivers[name] = tuple(_parse_delivery(item, providers) for item in node.elements())
    return NotifierConfig(providers=providers, receivers=receivers, retry=retry, concurrency=concurrency,
                          delivery_log=delivery_log, source=source)


def _parse_provider(name: str, node: _Node) -> HttpProvider | SmtpProvider:
    node.require_mapping()
    kind = node.child("type").choice(("http", "smtp"))
    if kind == "smtp":
        node.reject_unknown({"type", "host", "port", "starttls", "from", "username", "password", "subject", "body"})
        return SmtpProvider(
            name=name,
            host=node.child("host").string(),
            port=node.child("port", default=587).integer(minimum=1, maximum=65535),
            starttls=node.child("starttls", default=True).boolean(),
            sender=node.child("from").string(),
            username=node.child("username", default="").secret(),
            password=node.child("password", default="").secret(),
            subject=node.child("subject", default="[Cascade L{{labels.level}}] {{labels.alertname}} "
                               "{{labels.site}}/{{labels.cabinet}} {{status}}").template(),
            body=node.child("body", default="{{annotations.summary}}\n\n{{annotations.diagnosis}}\n\n"
                            "Action: {{annotations.action}}\n").template(),
        )
    node.reject_unknown({"type", "method", "url", "headers", "body", "format", "auth"})
    headers_node = node.child("headers", default={})
    headers_node.require_mapping()
    body_node = node.child("body", default=None)
    body_format = node.child("format", default="json" if not isinstance(body_node.value, str) else "text")
    fmt = body_format.choice(("json", "form", "text"))
    if fmt == "text" and body_node.value is not None and not isinstance(body_node.value, str):
        body_format.fail("format text needs a string body", "use format: json for a mapping body")
    if fmt == "form" and body_node.value is not None and not isinstance(body_node.value, dict):
        body_format.fail("format form needs a mapping body", "write the body as key: value pairs")
    url = node.child("url").template()
    if not url.source.startswith(("http://", "https://")):
        node.child("url").fail("must start with http:// or https://", "write the full provider URL")
    return HttpProvider(
        name=name,
        method=node.child("method", default="POST").choice(("GET", "POST", "PUT", "PATCH")),
        url=url,
        headers={key: child.template() for key, child in headers_node.items()},
        body=None if body_node.value is None else body_node.template_tree(),
        body_format=fmt,
        auth=_parse_auth(node.child("auth", default={"type": "none"})),
    )


def _parse_auth(node: _Node) -> HttpAuth:
    node.require_mapping()
    kind = node.child("type").choice(("none", "bearer", "basic", "hmac"))
    allowed = {"none": {"type"}, "bearer": {"type", "token"}, "basic": {"type", "username", "password"},
               "hmac": {"type", "secret", "signature_header", "timestamp_header"}}[kind]
    node.reject_unknown(allowed)
    if kind == "bearer":
        return HttpAuth(type=kind, token=node.child("token").secret())
    if kind == "basic":
        return HttpAuth(type=kind, username=node.child("username").secret(), password=node.child("password").secret())
    if kind == "hmac":
        return HttpAuth(type=kind, secret=node.child("secret").secret(),
                        signature_header=node.child("signature_header", default="X-Cascade-Signature").string(),
                        timestamp_header=node.child("timestamp_header", default="X-Cascade-Timestamp").string())
    return HttpAuth(type="none")


def _parse_delivery(node: _Node, providers: Mapping[str, HttpProvider | SmtpProvider]) -> Delivery:
    node.require_mapping()
    node.reject_unknown({"channel", "provider", "to", "levels", "send_resolved"})
    channel = node.child("channel").choice(CHANNELS)
    provider_node = node.child("provider")
    provider = provider_node.string()
    if provider not in providers:
        provider_node.fail(f"unknown provider {provider!r}",
                           f"use one of {sorted(providers)} or add it under providers:")
    if channel == "email" and providers[provider].type != "smtp":
        provider_node.fail("channel email needs an smtp provider", "point it at a provider with type: smtp")
    to_node = node.child("to", default=[""])
    to_node.require_list()
    recipients = tuple(item.string(allow_empty=True) for item in to_node.elements())
    if providers[provider].type == "smtp" and not all(recipients):
        to_node.fail("e-mail needs recipient addresses", "list addresses under to:")
    levels_node = node.child("levels", default=list(_LEVELS))
    levels_node.require_list()
    levels = frozenset(str(item.value) for item in levels_node.elements())
    if not levels <= set(_LEVELS):
        levels_node.fail(f"levels must be among {list(_LEVELS)}", "write e.g. levels: [2, 3]")
    return Delivery(channel=channel, provider=provider, recipients=recipients, levels=levels,
                    send_resolved=node.child("send_resolved", default=True).boolean())


class _Node:
    """A value plus its dotted key path, so that every validation error can say where it is."""

    _MISSING = object()

    def __init__(self, value: Any, source: str, key: str, env: Mapping[str, str]) -> None:
        self.value = value
        self.source = source
        self.key = key
        self.env = env

    def fail(self, problem: str, fix: str) -> None:
        raise ConfigError(self.source, self.key or "(top level)", problem, fix)

    def child(self, name: str, default: Any = _MISSING) -> _Node:
        key = f"{self.key}.{name}" if self.key else name
        if isinstance(self.value, dict) and name in self.value:
            return _Node(self.value[name], self.source, key, self.env)
        if default is _Node._MISSING:
            raise ConfigError(self.source, key, "missing", f"add {name}: (see config/notifier.example.yaml)")
        return _Node(default, self.source, key, self.env)

    def items(self) -> list[tuple[str, _Node]]:
        return [(str(k), self.child(str(k))) for k in self.value]

    def elements(self) -> list[_Node]:
        return [_Node(v, self.source, f"{self.key}[{i}]", self.env) for i, v in enumerate(self.value)]

    def require_mapping(self, nonempty: bool = False) -> None:
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {type(self.value).__name__}", "write key: value pairs here")
        if nonempty and not self.value:
            self.fail("is empty", "define at least one entry")

    def require_list(self) -> None:
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {type(self.value).__name__}", "write a YAML list (- item)")

    def reject_unknown(self, allowed: set[str]) -> None:
        unknown = sorted(set(map(str, self.value)) - allowed)
        if unknown:
            self.fail(f"unknown key(s) {unknown}", f"remove them or use one of {sorted(allowed)}")

    def string(self, allow_empty: bool = False) -> str:
        if isinstance(self.value, (int, float)) and not isinstance(self.value, bool):
            self.value = str(self.value)  # phone numbers written without quotes
        if not isinstance(self.value, str) or (not allow_empty and not self.value):
            self.fail("expected a non-empty string", "quote the value")
        return self._expand(self.value)

    def secret(self) -> str:
        if self.value == "":
            return ""
        raw = self.value if isinstance(self.value, str) else ""
        if not _ENV_REF.fullmatch(raw):
            self.fail("secrets must not be written in the file",
                      "put the value in an environment variable and write ${VAR_NAME} here")
        return self._expand(raw)

    def _expand(self, text: str) -> str:
        try:
            return expand_text(text, self.env)
        except MissingEnv as err:
            self.fail(str(err), f"export {err.name} before starting the notifier")
            raise  # unreachable: fail() raises

    def template(self) -> Template:
        text = self.string(allow_empty=True)
        try:
            return compile_template(text)
        except TemplateError as err:
            self.fail(str(err), "use placeholders like {{labels.site}}, {{annotations.summary}}, {{recipient}}")
            raise  # unreachable; keeps type checkers happy

    def template_tree(self) -> Any:
        if isinstance(self.value, dict):
            return {str(k): child.template_tree() for k, child in self.items()}
        if isinstance(self.value, list):
            return [child.template_tree() for child in self.elements()]
        if isinstance(self.value, str):
            return self.template()
        return self.value  # numbers and booleans pass through unchanged

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            self.fail("expected an integer", "write a whole number")
        if (minimum is not None and self.value < minimum) or (maximum is not None and self.value > maximum):
            self.fail(f"{self.value} out of range", f"use a value between {minimum} and {maximum}")
        return self.value

    def number(self, minimum: float | None = None) -> float:
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            self.fail("expected a number", "write a number of seconds")
        if minimum is not None and self.value < minimum:
            self.fail(f"{self.value} is below {minimum}", f"use a value >= {minimum}")
        return float(self.value)

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail("expected true or false", "write true or false")
        return self.value

    def choice(self, options: tuple[str, ...]) -> str:
        if self.value not in options:
            self.fail(f"{self.value!r} is not supported", f"use one of {list(options)}")
        return self.value
