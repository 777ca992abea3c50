"""Notifier configuration: load the YAML file, resolve ``${ENV}`` secrets, validate everything at start-up.

A wrong notifier config is found when the first critical alert fails to page someone, so every
check happens here, before the server listens, and every error names the file, the key and the fix.

The file is described by pydantic models on :mod:`core.validation` (unknown keys refused, numbers
that refuse booleans, each field's ``description`` is the fix printed when it is wrong). Validating
them yields the frozen dataclasses below (compiled templates, resolved secrets), which the rest of
the notifier uses. A pydantic error becomes one :class:`ConfigError`:
``notifier.yaml: receivers.warning[0].provider: unknown provider 'smss' - use one of [...]``.

Secrets never live in the file: token, password, secret and username fields must be ``${ENV_VAR}``
references, resolved from the environment when the config is loaded.

Language: ``notifier.language`` (``zh_CN``, the default, or ``en``) for every message, overridden
per delivery (``language:``) and per recipient (``to: [{to: "+44...", language: en}]``); times are
shown in ``notifier.timezone`` (default ``Asia/Shanghai``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, PlainValidator, Strict, ValidationInfo, model_validator
from pydantic.fields import FieldInfo

from core.env import MissingEnv, expand_text
from core.errors import CascadeError
from core.validation import Field, Float, Int, Model, ValidationError, short_value

from .i18n import DEFAULT_LANGUAGE, LANGUAGES, normalize_language
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
_Channel = Literal["app", "sms", "voice", "email", "feed"]
CHANNELS: tuple[str, ...] = get_args(_Channel)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LEVELS = ("1", "2", "3")
_MAX_BODY_DEPTH = 64  # a body nested deeper is a mistake (or a YAML anchor referring to itself)
DEFAULT_TIMEZONE = "Asia/Shanghai"
# China has had one offset and no daylight saving since 1991: usable without a tz database.
_CHINA = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")


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
    language: str = DEFAULT_LANGUAGE  # the delivery's own, else notifier.language
    recipient_languages: Mapping[str, str] = field(default_factory=dict, hash=False)  # recipient -> its language

    def language_for(self, recipient: str) -> str:
        """The language ``recipient`` is written to in."""
        return self.recipient_languages.get(recipient, self.language)


@dataclass(frozen=True)
class NotifierConfig:
    providers: dict[str, HttpProvider | SmtpProvider]
    receivers: dict[str, tuple[Delivery, ...]]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 8
    delivery_log: str | None = None
    source: str = "<config>"
    language: str = DEFAULT_LANGUAGE
    timezone: dt.tzinfo = _CHINA
    webhook_token: str | None = None  # required as `Authorization: Bearer <token>` on /webhook when set
    max_alerts: int = 100  # alerts one webhook request may carry


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
    config = parse_config(data, source=source, env=os.environ if env is None else env, base=Path(path).parent)
    if config.delivery_log and not Path(config.delivery_log).is_absolute():
        # Like every Cascade config: relative paths are relative to the file, not the working directory.
        config = dataclasses.replace(config, delivery_log=str(Path(path).parent / config.delivery_log))
    return config


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None,
                 base: Path | None = None) -> NotifierConfig:
    """Validate an already-parsed config mapping (tests build these in code); ``base``: the directory
    relative file names are resolved against (the config file's)."""
    env = os.environ if env is None else env
    try:
        spec = _NotifierFile.model_validate(data, context={"env": env})
    except ValidationError as err:
        raise _config_error(err, source) from None
    language = spec.notifier.language
    return NotifierConfig(
        providers={name: _provider(name, p) for name, p in spec.providers.items()},
        receivers={name: tuple(_delivery(d, language) for d in deliveries)
                   for name, deliveries in spec.receivers.items()},
        retry=RetryPolicy(**spec.notifier.retry.model_dump()),
        concurrency=spec.notifier.concurrency,
        delivery_log=spec.notifier.delivery_log,
        source=source,
        language=language,
        timezone=spec.notifier.timezone,
        webhook_token=_webhook_token(spec.notifier.webhook_token_file, source, base),
        max_alerts=spec.notifier.max_alerts_per_request,
    )


def _webhook_token(name: str, source: str, base: Path | None) -> str | None:
    """The token in ``name`` (relative to ``base``), or ``None`` when no file is configured."""
    if not name:
        return None
    path = Path(name) if base is None or Path(name).is_absolute() else base / name
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(source, "notifier.webhook_token_file", f"{path} cannot be read: {err}",
                          "create it with a random token (e.g. `openssl rand -hex 32 > FILE`) and give "
                          "Alertmanager the same file (credentials_file)") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(source, "notifier.webhook_token_file", f"{path} holds no usable token (16+ characters, "
                          "no spaces)", "write a random token into it, e.g. `openssl rand -hex 32`")
    return token


# ---------------------------------------------------------------- value types of the file

class _Invalid(ValueError):
    """Raised by a validator: the problem, the fix (None: the field's description) and where below it.

    ``at`` locates the problem under the validated value (``("format",)`` from a provider check,
    ``("text",)`` inside a body), so the message names the exact key.
    """

    def __init__(self, problem: str, fix: str | None = None, at: Sequence[str | int] = ()) -> None:
        super().__init__(problem if fix is None else f"{problem}. Fix: {fix}")
        self.problem, self.fix, self.at = problem, fix, tuple(at)


def _env(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context if isinstance(info.context, Mapping) else {}
    env = context.get("env")
    return env if isinstance(env, Mapping) else os.environ


def _expand(text: str, info: ValidationInfo) -> str:
    try:
        return expand_text(text, _env(info))
    except MissingEnv as err:
        raise _Invalid(str(err), f"export {err.name} before starting the notifier") from None


def _as_text(value: Any, empty: bool) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # phone numbers (and ports in hosts, ...) written without quotes
    if not isinstance(value, str):
        raise _Invalid(f"{short_value(value)} is not text" if _scalar(value) else f"expected text, got {_kind(value)}")
    if not empty and not value:
        raise _Invalid("is empty")
    return value


def _text(value: Any, info: ValidationInfo) -> str:
    return _expand(_as_text(value, empty=False), info)


def _optional_text(value: Any, info: ValidationInfo) -> str:
    return _expand(_as_text(value, empty=True), info)


def _template(value: Any, info: ValidationInfo) -> Template:
    if isinstance(value, Template):  # a default
        return value
    text = _expand(_as_text(value, empty=True), info)
    try:
        return compile_template(text)
    except TemplateError as err:
        raise _Invalid(str(err),
                       "use placeholders like {{labels.site}}, {{annotations.summary}}, {{recipient}}") from None


def _body(value: Any, info: ValidationInfo) -> Any:
    """A body: strings compiled to templates inside mappings and lists; numbers and booleans kept."""
    def walk(value: Any, at: tuple[str | int, ...]) -> Any:
        if len(at) > _MAX_BODY_DEPTH:
            raise _Invalid(f"nested deeper than {_MAX_BODY_DEPTH} levels (or refers to itself)", "flatten the body")
        if isinstance(value, dict):
            return {str(k): walk(v, (*at, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*at, i)) for i, v in enumerate(value)]
        if isinstance(value, str):
            try:
                return _template(value, info)
            except _Invalid as err:
                raise _Invalid(err.problem, err.fix, at) from None
        return value
    return walk(value, ())


def _secret(value: Any, info: ValidationInfo) -> str:
    if isinstance(value, str) and value == "":
        return ""
    if not (isinstance(value, str) and _ENV_REF.fullmatch(value)):
        # Never echo the value: it is probably the secret itself.
        raise _Invalid("secrets must not be written in the file",
                       "put the value in an environment variable and write ${VAR_NAME} here")
    return _expand(value, info)


def _language(value: Any) -> str:
    try:
        return normalize_language(value)
    except ValueError:
        raise _Invalid(f"{short_value(value)} is not a supported language",
                       f"use {' or '.join(LANGUAGES)} (Simplified Chinese, English)") from None


def _timezone(value: Any, info: ValidationInfo) -> dt.tzinfo:
    if isinstance(value, dt.tzinfo):  # the default
        return value
    name = _text(value, info)
    if name.upper() == "UTC":
        return dt.UTC
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, ImportError):
        if name in ("Asia/Shanghai", "PRC", "Asia/Chongqing", "Asia/Harbin", "Asia/Urumqi"):
            return _CHINA  # no tz database on this machine (slim images); China needs none
        raise _Invalid(f"unknown time zone {name!r}", "an IANA time zone name, e.g. Asia/Shanghai or UTC") from None


def _recipient(value: Any, info: ValidationInfo) -> tuple[str, str | None]:
    """A recipient: its address (a bare number is text), or ``{to: address, language: en}``."""
    if isinstance(value, tuple):  # the default, already parsed
        return value
    if not isinstance(value, dict):
        return _optional_text(value, info), None
    value = _str_keys(value)
    unknown = sorted(set(value) - {"to", "language"})
    if unknown:
        raise _Invalid(f"unknown key(s) {unknown}", "a recipient with its own language is {to: ..., language: en}")
    if "to" not in value:
        raise _Invalid("missing", "add to: the phone number, app audience or e-mail address", ("to",))
    try:
        address = _text(value["to"], info)
    except _Invalid as err:
        raise _Invalid(err.problem, err.fix or "the phone number, app audience or e-mail address", ("to",)) from None
    try:
        language = _language(value["language"]) if "language" in value else None
    except _Invalid as err:
        raise _Invalid(err.problem, err.fix, ("language",)) from None
    return address, language


def _level(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _str_keys(value: Any) -> Any:
    # YAML keys may be numbers (a receiver called 2, a header called 1); names are text.
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


Text = Annotated[str, PlainValidator(_text)]
"""Non-empty text; a bare number is taken as text; ``${VAR}`` expanded."""
OptionalText = Annotated[str, PlainValidator(_optional_text)]
"""Text that may be empty (a feed delivery has no recipient)."""
TemplateText = Annotated[Template, PlainValidator(_template)]
"""Text with ``{{placeholders}}``, compiled when the config loads."""
Body = Annotated[Any, PlainValidator(_body)]
Secret = Annotated[str, PlainValidator(_secret)]
"""``${VAR}`` only, resolved from the environment; empty means unset."""
StrictBool = Annotated[bool, Strict()]
"""``true`` or ``false`` (not ``"yes"``, not ``1``)."""
Level = Annotated[Literal["1", "2", "3"], BeforeValidator(_level)]
Language = Annotated[str, PlainValidator(_language)]
"""``zh_CN`` or ``en`` (also ``zh``, ``zh-CN``, ``en_US``)."""
TimeZone = Annotated[dt.tzinfo, PlainValidator(_timezone)]
Recipient = Annotated[tuple[str, str | None], PlainValidator(_recipient)]
"""An address, or ``{to: address, language: en}``."""
Names = BeforeValidator(_str_keys)

_SECRET_FIX = "an environment reference like ${VAR_NAME}; secrets never go in the file"
_TEMPLATE_FIX = "text; placeholders like {{labels.site}}, {{annotations.summary}}, {{recipient}} allowed"


class _Section(Model):
    """A mapping in the notifier file: unknown keys refused (core.validation.Model), keys read as text."""

    @model_validator(mode="before")
    @classmethod
    def _keys_as_text(cls, data: Any) -> Any:
        return _str_keys(data)


# ---------------------------------------------------------------- the file: notifier, providers, receivers

class _Retry(_Section):
    attempts: Int = Field(4, ge=1, description="a whole number >= 1: total tries per message")
    initial_delay_s: Float = Field(0.5, ge=0, allow_inf_nan=False,
                                   description="seconds >= 0 before the first retry, e.g. 0.5")
    max_delay_s: Float = Field(30.0, ge=0, allow_inf_nan=False, description="seconds >= 0, the backoff cap, e.g. 30")
    timeout_s: Float = Field(10.0, ge=0.001, allow_inf_nan=False, description="seconds > 0 per request, e.g. 10")


class _Settings(_Section):
    concurrency: Int = Field(8, ge=1, description="a whole number >= 1: provider requests in flight at once")
    delivery_log: Text | None = Field(None, description="a file for the JSON-lines delivery log "
                                                        "(relative to this file), or leave it out")
    retry: _Retry = Field(default_factory=_Retry, description="attempts, initial_delay_s, max_delay_s, timeout_s")
    language: Language = Field(DEFAULT_LANGUAGE, description=f"the language of every message: {' or '.join(LANGUAGES)}"
                                                             " (Simplified Chinese, English)")
    timezone: TimeZone = Field(_CHINA, description="the time zone of the times in messages, an IANA name, "
                                                   f"e.g. {DEFAULT_TIMEZONE} (the default) or UTC")
    webhook_token_file: OptionalText = Field("", description="a file holding the token Alertmanager must send "
                                                             "(Authorization: Bearer); relative to this file; "
                                                             "empty: the webhook takes any request (loopback only)")
    max_alerts_per_request: Int = Field(100, ge=1, le=10_000,
                                        description="the most alerts one webhook request may carry (Alertmanager's "
                                                    "max_alerts); a request with more is refused whole")


class _NoAuth(_Section):
    type: Literal["none"] = Field(description="none, bearer, basic or hmac")


class _BearerAuth(_Section):
    type: Literal["bearer"] = Field(description="none, bearer, basic or hmac")
    token: Secret = Field(description=_SECRET_FIX)


class _BasicAuth(_Section):
    type: Literal["basic"] = Field(description="none, bearer, basic or hmac")
    username: Secret = Field(description=_SECRET_FIX)
    password: Secret = Field(description=_SECRET_FIX)


class _HmacAuth(_Section):
    type: Literal["hmac"] = Field(description="none, bearer, basic or hmac")
    secret: Secret = Field(description=_SECRET_FIX)
    signature_header: Text = Field("X-Cascade-Signature", description="an HTTP header name")
    timestamp_header: Text = Field("X-Cascade-Timestamp", description="an HTTP header name")


_Auth = Annotated[_NoAuth | _BearerAuth | _BasicAuth | _HmacAuth, Field(discriminator="type")]


class _Http(_Section):
    type: Literal["http"] = Field(description="http or smtp")
    method: Literal["GET", "POST", "PUT", "PATCH"] = Field("POST", description="GET, POST, PUT or PATCH")
    url: TemplateText = Field(description="the provider's full http:// or https:// URL; placeholders allowed")
    headers: Annotated[dict[str, TemplateText], Names] = Field(
        default_factory=dict, description="header: value pairs; values may use placeholders")
    body: Body = Field(None, description="a mapping (format json or form) or a string (format text); "
                                         "strings may use placeholders like {{annotations.summary}}")
    format: Literal["json", "form", "text"] | None = Field(
        None, description="json or form (mapping body), text (string body); default json, text for a string body")
    auth: _Auth = Field(default_factory=lambda: _NoAuth(type="none"),
                        description="type: none, bearer (token), basic (username, password) or hmac (secret)")

    @model_validator(mode="after")
    def _consistent(self) -> _Http:
        if not self.url.source.startswith(("http://", "https://")):
            raise _Invalid("must start with http:// or https://", "write the full provider URL", ("url",))
        if self.body_format == "text" and self.body is not None and not isinstance(self.body, Template):
            raise _Invalid("format text needs a string body", "use format: json for a mapping body", ("format",))
        if self.body_format == "form" and self.body is not None and not isinstance(self.body, dict):
            raise _Invalid("format form needs a mapping body", "write the body as key: value pairs", ("format",))
        return self

    @property
    def body_format(self) -> str:
        return self.format or ("text" if isinstance(self.body, Template) else "json")


class _Smtp(_Section):
    type: Literal["smtp"] = Field(description="http or smtp")
    host: Text = Field(description="the SMTP server's host name")
    port: Int = Field(587, ge=1, le=65535, description="a port number 1-65535 (587 for STARTTLS)")
    starttls: StrictBool = Field(True, description="true or false")
    sender: Text = Field(alias="from", description="the sender address, e.g. cascade-alerts@example.net")
    username: Secret = Field("", description=_SECRET_FIX)
    password: Secret = Field("", description=_SECRET_FIX)
    subject: TemplateText = Field(compile_template("{{message.subject}}"), description=_TEMPLATE_FIX)
    body: TemplateText = Field(compile_template("{{message.email}}"), description=_TEMPLATE_FIX)


_Provider = Annotated[_Http | _Smtp, Field(discriminator="type")]


class _Delivery(_Section):
    channel: _Channel = Field(description=f"one of {', '.join(CHANNELS)}")
    provider: Text = Field(description="the name of an entry under providers:")
    to: tuple[Recipient, ...] = Field((("", None),), description="a list of recipients (phone numbers, app audiences, "
                                      "e-mail addresses), each either the address or {to: address, language: en}; "
                                      "leave it out for a feed")
    levels: tuple[Level, ...] = Field(("1", "2", "3"), description="a list of alert levels among 1, 2, 3, e.g. [2, 3]")
    send_resolved: StrictBool = Field(True, description="true or false")
    language: Language | None = Field(None, description=f"this delivery's language: {' or '.join(LANGUAGES)}; "
                                                        "leave it out for notifier.language")


class _NotifierFile(_Section):
    notifier: _Settings = Field(default_factory=_Settings, description="concurrency, delivery_log and retry (all optional)")
    providers: Annotated[dict[str, _Provider], Names] = Field(
        description="named providers, each with type: http or smtp (see config/notifier.example.yaml)")
    receivers: Annotated[dict[str, tuple[_Delivery, ...]], Names] = Field(
        description="one list of deliveries per Alertmanager receiver name (see config/notifier.example.yaml)")

    @model_validator(mode="after")
    def _references(self) -> _NotifierFile:
        if not self.providers:
            raise _Invalid("is empty", "define at least one provider", ("providers",))
        if not self.receivers:
            raise _Invalid("is empty", "define at least one receiver", ("receivers",))
        for name, deliveries in self.receivers.items():
            for i, delivery in enumerate(deliveries):
                provider = self.providers.get(delivery.provider)
                if provider is None:
                    raise _Invalid(f"unknown provider {delivery.provider!r}",
                                   f"use one of {sorted(self.providers)} or add it under providers:",
                                   ("receivers", name, i, "provider"))
                if delivery.channel == "email" and provider.type != "smtp":
                    raise _Invalid("channel email needs an smtp provider", "point it at a provider with type: smtp",
                                   ("receivers", name, i, "provider"))
                if provider.type == "smtp" and not all(address for address, _ in delivery.to):
                    raise _Invalid("e-mail needs recipient addresses", "list addresses under to:",
                                   ("receivers", name, i, "to"))
        return self


# ---------------------------------------------------------------- validated file -> runtime config

def _provider(name: str, spec: _Http | _Smtp) -> HttpProvider | SmtpProvider:
    if isinstance(spec, _Smtp):
        return SmtpProvider(name=name, host=spec.host, port=spec.port, starttls=spec.starttls, sender=spec.sender,
                            subject=spec.subject, body=spec.body, username=spec.username, password=spec.password)
    return HttpProvider(name=name, method=spec.method, url=spec.url, headers=dict(spec.headers), body=spec.body,
                        body_format=spec.body_format, auth=HttpAuth(**spec.auth.model_dump()))


def _delivery(spec: _Delivery, language: str) -> Delivery:
    return Delivery(channel=spec.channel, provider=spec.provider, recipients=tuple(address for address, _ in spec.to),
                    levels=frozenset(spec.levels), send_resolved=spec.send_resolved,
                    language=spec.language or language,
                    recipient_languages={address: own for address, own in spec.to if own})


# ---------------------------------------------------------------- pydantic error -> ConfigError

_MAPPING_ERRORS = {"model_type", "model_attributes_type", "dict_type", "union_tag_not_found"}
_LIST_ERRORS = {"list_type", "tuple_type"}
# The same words as core.validation: a value "is not an integer", not "Input should be a valid integer".
_PROBLEMS = {
    "int_type": "is not an integer", "int_parsing": "is not an integer", "int_from_float": "is not an integer",
    "float_type": "is not a number", "float_parsing": "is not a number", "finite_number": "is not a finite number",
    "bool_type": "is not true or false", "bool_parsing": "is not true or false", "string_type": "is not text",
}


def _config_error(err: ValidationError, source: str) -> ConfigError:
    """The first problem as ``source: dotted.key: problem - fix``; unknown keys come first, all listed.

    Local rather than :func:`core.validation.validation_error`: that one names keys through
    discriminated unions with the tag (``providers.sms.http.url``) and finds no description below a
    ``dict[str, Model]``, and the notifier file is made of both.
    """
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        parent = tuple(unknown[0]["loc"][:-1])
        names = sorted({str(e["loc"][-1]) for e in unknown if tuple(e["loc"][:-1]) == parent})
        path, _, tp = _locate(parent)
        allowed = sorted(_keys(tp)) if _is_model(tp) else []
        close = difflib.get_close_matches(names[0], allowed, n=1) if len(names) == 1 else []
        hint = f"did you mean {close[0]!r}? Otherwise " if close else ""
        return ConfigError(source, _dotted(path), f"unknown key(s) {names}",
                           f"{hint}remove them or use one of {allowed}")

    first = errors[0]
    kind, value = first["type"], first.get("input")
    path, info, tp = _locate(tuple(first["loc"]))
    description = info.description if info is not None else None
    error = (first.get("ctx") or {}).get("error")

    if isinstance(error, _Invalid):
        return ConfigError(source, _dotted([*path, *error.at]), error.problem,
                           error.fix or description or "see config/notifier.example.yaml")
    if kind in ("union_tag_invalid", "union_tag_not_found") and isinstance(value, dict):
        tags = _tags(tp)
        path = [*path, "type"]
        if "type" not in value:
            return ConfigError(source, _dotted(path), "missing", f"add type: {' or '.join(tags)}")
        return ConfigError(source, _dotted(path), f"{short_value(value['type'])} is not supported", f"use one of {tags}")
    if kind == "missing":
        name = path[-1] if path else "it"
        return ConfigError(source, _dotted(path), "missing",
                           f"add {name}: {description}" if description else f"add {name}: "
                           "(see config/notifier.example.yaml)")
    if kind in _MAPPING_ERRORS:
        return ConfigError(source, _dotted(path), f"expected a mapping, got {_kind(value)}",
                           description or "write key: value pairs here")
    if kind in _LIST_ERRORS:
        return ConfigError(source, _dotted(path), f"expected a list, got {_kind(value)}",
                           description or "write a YAML list (- item)")
    fix = description or "see config/notifier.example.yaml"
    if kind == "literal_error":
        return ConfigError(source, _dotted(path), f"{short_value(value)} is not supported", fix)
    if isinstance(error, Exception):  # a ValueError from a validator, e.g. core.validation's bool-as-number
        problem, _, own_fix = str(error).partition(". Fix: ")
        return ConfigError(source, _dotted(path), problem, own_fix or fix)
    if kind in _PROBLEMS:
        return ConfigError(source, _dotted(path), f"{short_value(value)} {_PROBLEMS[kind]}", fix)
    message = str(first["msg"])
    problem = f"{short_value(value)} {message[0].lower()}{message[1:]}" if message else f"{short_value(value)} is not valid"
    return ConfigError(source, _dotted(path), problem.replace(" input should be ", " is not "), fix)


def _locate(loc: Sequence[int | str]) -> tuple[list[str | int], FieldInfo | None, Any]:
    """Follow ``loc`` through the models: the key path as written (union tags dropped), the last
    model field passed (its description is the fix) and the type reached."""
    path: list[str | int] = []
    info: FieldInfo | None = None
    tp: Any = _NotifierFile
    i = 0
    while i < len(loc):
        part = loc[i]
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, types.UnionType):
            members = [_unwrap(a) for a in get_args(tp) if a is not type(None)]
            by_tag = {tag: m for m in members for tag in _tags(m)}
            if isinstance(part, str) and part in by_tag:
                tp = by_tag[part]  # a discriminated union's tag: pydantic's, not a key in the file
                i += 1
            else:
                tp = members[0] if len(members) == 1 else Any
            continue
        if _is_model(tp):
            found = next(((key, f) for key, f in tp.model_fields.items() if (f.alias or key) == part), None)
            info = found[1] if found else None
            tp = found[1].annotation if found else Any
            path.append(str(part))
        elif get_origin(tp) is dict:
            if part != "[key]":
                path.append(str(part))
            tp = get_args(tp)[1]
        elif get_origin(tp) in (tuple, list):
            path.append(part)
            tp = get_args(tp)[0]
        else:
            path.append(part)
            tp = Any
        i += 1
    return path, info, _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or key for key, f in model.model_fields.items()]


def _tags(tp: Any) -> list[str]:
    """The ``type:`` values a model (or each model of a union) accepts."""
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [tag for member in get_args(tp) for tag in _tags(member)]
    if _is_model(tp) and "type" in tp.model_fields:
        return [str(t) for t in get_args(tp.model_fields["type"].annotation)]
    return []


def _dotted(path: Sequence[str | int]) -> str:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(file)"


def _kind(value: Any) -> str:
    """What a value is, without showing it (a misplaced mapping may hold a secret)."""
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing", bool: "true/false"}.get(
        type(value), type(value).__name__)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))


