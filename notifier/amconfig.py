"""Point the shipped Alertmanager config at a notifier other than the compose service.

Alertmanager does not expand environment variables in its config, so the shipped file names the
compose service (``http://cascade-notifier:9120``) and a local stack or a test rewrites it here.

    >>> render_alertmanager_config("url: http://cascade-notifier:9120/webhook/critical", "http://127.0.0.1:9999")
    'url: http://127.0.0.1:9999/webhook/critical'
"""

from __future__ import annotations

__all__ = ["COMPOSE_NOTIFIER_URL", "COMPOSE_SMARTHOST", "COMPOSE_TOKEN_FILE", "render_alertmanager_config"]

COMPOSE_NOTIFIER_URL = "http://cascade-notifier:9120"
COMPOSE_SMARTHOST = "mail.cascade.internal:25"
COMPOSE_TOKEN_FILE = "/run/secrets/notifier_webhook_token"
_AUTH_BLOCK = f"""        http_config:
          authorization:
            type: Bearer
            credentials_file: {COMPOSE_TOKEN_FILE}
"""


def render_alertmanager_config(text: str, notifier_url: str, smtp_smarthost: str | None = None,
                               token_file: str | None = None) -> str:
    """``text`` with every notifier webhook (and optionally the fallback SMTP relay) re-pointed.

    ``token_file``: the file holding the notifier's webhook token (``notifier.webhook_token_file``);
    ``None`` leaves the webhooks without it (a notifier that requires no token: tests)."""
    if COMPOSE_NOTIFIER_URL not in text:
        raise ValueError(f"{COMPOSE_NOTIFIER_URL} not found: pass the shipped provisioning/alertmanager/alertmanager.yml")
    text = text.replace(COMPOSE_NOTIFIER_URL, notifier_url.rstrip("/"))
    if token_file is None:
        text = text.replace(_AUTH_BLOCK, "")
    else:
        text = text.replace(COMPOSE_TOKEN_FILE, token_file)
    if smtp_smarthost is not None:
        text = text.replace(COMPOSE_SMARTHOST, smtp_smarthost)
    return text
