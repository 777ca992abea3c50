"""Point the shipped Alertmanager config at a notifier other than the compose service.

Alertmanager does not expand environment variables in its config, so the shipped file names the
compose service (``http://cascade-notifier:9120``) and a local stack or a test rewrites it here.

    >>> render_alertmanager_config("url: http://cascade-notifier:9120/webhook/critical", "http://127.0.0.1:9999")
    'url: http://127.0.0.1:9999/webhook/critical'
"""

from __future__ import annotations

__all__ = ["COMPOSE_NOTIFIER_URL", "COMPOSE_SMARTHOST", "render_alertmanager_config"]

COMPOSE_NOTIFIER_URL = "http://cascade-notifier:9120"
COMPOSE_SMARTHOST = "mail.cascade.internal:25"


def render_alertmanager_config(text: str, notifier_url: str, smtp_smarthost: str | None = None) -> str:
    """``text`` with every notifier webhook (and optionally the fallback SMTP relay) re-pointed."""
    if COMPOSE_NOTIFIER_URL not in text:
        raise ValueError(f"{COMPOSE_NOTIFIER_URL} not found: pass the shipped provisioning/alertmanager/alertmanager.yml")
    text = text.replace(COMPOSE_NOTIFIER_URL, notifier_url.rstrip("/"))
    if smtp_smarthost is not None:
        text = text.replace(COMPOSE_SMARTHOST, smtp_smarthost)
    return text
