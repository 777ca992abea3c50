"""Cascade notifier: receives Alertmanager webhooks and notifies people by voice call, SMS, in-app
message and e-mail, and third parties by feed (P-5.2.2.4, P-5.5.3). See docs/notifications.md."""

from .amconfig import render_alertmanager_config
from .config import ConfigError, NotifierConfig, load_config, parse_config
from .providers import sign_hmac
from .server import DISPATCHER_KEY, METRICS_KEY, build_app, run_notifier, serve

__all__ = [
    "DISPATCHER_KEY",
    "METRICS_KEY",
    "ConfigError",
    "NotifierConfig",
    "build_app",
    "load_config",
    "parse_config",
    "render_alertmanager_config",
    "run_notifier",
    "serve",
    "sign_hmac",
]
