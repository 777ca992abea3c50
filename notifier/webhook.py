"""Parse and check Alertmanager's webhook payload (version "4").

Only the fields the notifier uses are required; anything else Alertmanager adds later is ignored.
Errors say which field is wrong, because the sender is usually someone wiring a new tool by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import CascadeError

__all__ = ["PayloadError", "WebhookAlert", "parse_webhook"]


class PayloadError(CascadeError):
    """The request body is not an Alertmanager v4 webhook payload."""


@dataclass(frozen=True)
class WebhookAlert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str
    ends_at: str
    generator_url: str

    @property
    def level(self) -> str:
        return self.labels.get("level", "")


def parse_webhook(body: bytes) -> list[WebhookAlert]:
    """The alerts in ``body``; raise PayloadError with a message fit for the HTTP 400 response."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: absurd nesting
        raise PayloadError(f"body is not JSON ({err}); send Alertmanager's webhook payload") from err
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (Alertmanager webhook payload)")
    if data.get("version") != "4":
        raise PayloadError(f"unsupported payload version {data.get('version')!r}; expected \"4\" "
                           "(Alertmanager webhook_config)")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("field 'alerts' must be a list")
    return [_parse_alert(i, item) for i, item in enumerate(alerts)]


def _parse_alert(index: int, item: Any) -> WebhookAlert:
    where = f"alerts[{index}]"
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be an object")
    status = item.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status must be 'firing' or 'resolved', got {status!r}")
    labels = _string_map(item.get("labels"), f"{where}.labels")
    if "alertname" not in labels:
        raise PayloadError(f"{where}.labels has no alertname")
    return WebhookAlert(
        status=status,
        labels=labels,
        annotations=_string_map(item.get("annotations", {}), f"{where}.annotations"),
        fingerprint=str(item.get("fingerprint", "")),
        starts_at=str(item.get("startsAt", "")),
        ends_at=str(item.get("endsAt", "")),
        generator_url=str(item.get("generatorURL", "")),
    )


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError(f"{where} must be an object of string values")
    return value
