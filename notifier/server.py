"""The notifier HTTP service: Alertmanager webhooks in, pages/SMS/app messages/e-mails out.

Routes:
    POST /webhook/{receiver}   Alertmanager webhook (payload version 4) for a receiver in the config
    GET  /metrics              Prometheus metrics (cascade_notify_*)
    GET  /-/healthy            liveness
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import ssl
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .config import NotifierConfig, load_config
from .delivery import Dispatcher
from .delivery_log import DeliveryLog
from .metrics import NotifyMetrics, create_metrics
from .webhook import PayloadError, parse_webhook

__all__ = ["CONFIG_KEY", "DISPATCHER_KEY", "METRICS_KEY", "build_app", "run_notifier", "serve"]

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("notify_config", NotifierConfig)
DISPATCHER_KEY = web.AppKey("notify_dispatcher", Dispatcher)
METRICS_KEY = web.AppKey("notify_metrics", NotifyMetrics)
_REGISTRY_KEY = web.AppKey("notify_registry", CollectorRegistry)


def build_app(config: NotifierConfig, *, session: aiohttp.ClientSession | None = None,
              registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
              rng: random.Random | None = None) -> web.Application:
    """A fresh notifier app. Without ``session`` one is created on start-up and closed on clean-up."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = create_metrics(registry)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[_REGISTRY_KEY] = registry

    async def lifecycle(app: web.Application):
        own_session = session is None
        client = session if session is not None else aiohttp.ClientSession()
        delivery_log = DeliveryLog(config.delivery_log, clock)
        app[DISPATCHER_KEY] = Dispatcher(config, session=client, metrics=metrics, log=delivery_log,
                                         clock=clock, rng=rng)
        yield
        # Pages already accepted from Alertmanager must still go out on shutdown.
        await app[DISPATCHER_KEY].close()
        delivery_log.close()
        if own_session:
            await client.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/webhook/{receiver}", _handle_webhook)
    app.router.add_get("/metrics", _handle_metrics)
    app.router.add_get("/-/healthy", _handle_healthy)
    return app


async def serve(config_path: str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None) -> None:
    """Load ``config_path`` and serve on ``host:port`` until cancelled (``cascade notify --config``).

    With ``ssl_context`` (``--tls-cert``/``--tls-key``) the port speaks HTTPS only."""
    config = load_config(config_path)
    runner = web.AppRunner(build_app(config))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        log.info("notifier listening on %s://%s:%d with receivers %s", "https" if ssl_context else "http",
                 host, port, sorted(config.receivers))
        if config.webhook_token is None:
            log.warning("the webhook accepts requests from anyone who can reach %s:%d: set "
                        "notifier.webhook_token_file (and give Alertmanager the same token)", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_notifier(config_path: str, host: str = "0.0.0.0", port: int = 9120) -> None:
    """Blocking entry point: serve until Ctrl-C / SIGTERM-as-KeyboardInterrupt."""
    try:
        asyncio.run(serve(config_path, host, port))
    except KeyboardInterrupt:
        pass


async def _handle_webhook(request: web.Request) -> web.Response:
    receiver = request.match_info["receiver"]
    config = request.app[CONFIG_KEY]
    webhooks = request.app[METRICS_KEY].webhooks
    if config.webhook_token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.webhook_token}".encode()):
            webhooks.labels("unknown", "unauthorized").inc()  # nothing from an unauthenticated request
            return _error(401, "this webhook needs 'Authorization: Bearer <token>' (notifier.webhook_token_file; "
                               "Alertmanager: http_config.authorization.credentials_file)")
    if receiver not in config.receivers:
        # Label the metric with a fixed value: receiver names from the URL are untrusted input.
        webhooks.labels("unknown", "unknown_receiver").inc()
        return _error(404, f"unknown receiver {receiver!r}; configured receivers: {sorted(config.receivers)} "
                      f"- add it under receivers: in {config.source} or fix the Alertmanager webhook URL")
    try:
        alerts = parse_webhook(await request.read())
    except PayloadError as err:
        webhooks.labels(receiver, "bad_request").inc()
        return _error(400, str(err))
    if len(alerts) > config.max_alerts:
        webhooks.labels(receiver, "too_many_alerts").inc()
        return _error(413, f"{len(alerts)} alerts in one request; at most {config.max_alerts} "
                           "(notifier.max_alerts_per_request; Alertmanager: max_alerts)")
    started = request.app[DISPATCHER_KEY].dispatch(receiver, alerts)
    webhooks.labels(receiver, "accepted").inc()
    return web.json_response({"status": "accepted", "alerts": len(alerts), "deliveries": started})


async def _handle_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _handle_healthy(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status)
