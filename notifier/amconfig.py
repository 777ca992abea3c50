"""Point the shipped Alertmanager config at a notifier other than the compose service.

Alertmanager does not expand environment variables in its config, so the shipped file names the
compose service (``https://cascade-notifier:9120``, checked against the compose CA) and a local stack
or a test rewrites it here.

    >>> render_alertmanager_config("url: https://cascade-notifier:9120/webhook/critical", "http://127.0.0.1:9999")
    'url: http://127.0.0.1:9999/webhook/critical'
"""

from __future__ import annotations

__all__ = ["COMPOSE_CA_FILE", "COMPOSE_NOTIFIER_URL", "COMPOSE_SMARTHOST", "COMPOSE_TOKEN_FILE",
           "render_alertmanager_config"]

COMPOSE_NOTIFIER_URL = "https://cascade-notifier:9120"
COMPOSE_SMARTHOST = "mail.cascade.internal:25"
COMPOSE_TOKEN_FILE = "/run/secrets/notifier_webhook_token"
COMPOSE_CA_FILE = "/run/secrets/tls_ca"
_AUTH_LINES = f"""          authorization:
            type: Bearer
            credentials_file: {COMPOSE_TOKEN_FILE}
"""
_TLS_LINES = f"""          tls_config:
            ca_file: {COMPOSE_CA_FILE}
"""
_HTTP_CONFIG = "        http_config:\n"
_SHIPPED_BLOCK = _HTTP_CONFIG + _AUTH_LINES + _TLS_LINES


def render_alertmanager_config(text: str, notifier_url: str, smtp_smarthost: str | None = None,
                               token_file: str | None = None, ca_file: str | None = None) -> str:
    """``text`` with every notifier webhook (and optionally the fallback SMTP relay) re-pointed.

    ``token_file``: the file holding the notifier's webhook token (``notifier.webhook_token_file``);
    ``None`` leaves the webhooks without it (a notifier that requires no token: tests).
    ``ca_file``: the CA that signed an ``https://`` notifier's certificate; ``None`` leaves the webhooks
    without one (a plain-HTTP notifier on loopback: ``make run``, tests)."""
    if COMPOSE_NOTIFIER_URL not in text:
        raise ValueError(f"{COMPOSE_NOTIFIER_URL} not found: pass the shipped provisioning/alertmanager/alertmanager.yml")
    text = text.replace(COMPOSE_NOTIFIER_URL, notifier_url.rstrip("/"))
    block = ((_AUTH_LINES.replace(COMPOSE_TOKEN_FILE, token_file) if token_file is not None else "")
             + (_TLS_LINES.replace(COMPOSE_CA_FILE, ca_file) if ca_file is not None else ""))
    text = text.replace(_SHIPPED_BLOCK, _HTTP_CONFIG + block if block else "")
    if smtp_smarthost is not None:
        text = text.replace(COMPOSE_SMARTHOST, smtp_smarthost)
    return text
