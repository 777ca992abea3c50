"""Notifier delivery (notifier/delivery.py): what a provider template can use, what the delivery log
records for each ending (sent, failed, refused by an exception, cut short by shutdown). Written to kill
the mutants `make mutate` found alive. A local aiohttp app stands in for the providers, as in
tests/test_notifier.py."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from notifier import parse_config
from notifier.delivery import Dispatcher, compute_backoff, describe_target
from notifier.delivery_log import DeliveryLog
from notifier.metrics import create_metrics
from notifier.webhook import WebhookAlert
from tests.fixtures.http import start_app

NOW = 1_760_000_000.0


class Providers:
    """Records each request's body by path; ``statuses[path]`` lists the answers, in turn (then 200)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[Any]] = {}
        self.statuses: dict[str, list[int]] = {}
        self.delay_s = 0.0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.setdefault(request.path, []).append(json.loads(await request.read() or b"null"))
        await asyncio.sleep(self.delay_s)
        answers = self.statuses.get(request.path, [])
        status = answers.pop(0) if answers else 200
        return web.Response(status=status, text="ok" if status < 300 else "busy")


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    server = Providers()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner, server.url = await start_app(app)
    yield server
    await runner.cleanup()


def _config(providers: Providers, attempts: int, delay_s: float, *, concurrency: int = 2, timeout_s: float = 2):
    return parse_config({
        "notifier": {"concurrency": concurrency, "retry": {"attempts": attempts, "initial_delay_s": delay_s,
                                                           "max_delay_s": delay_s, "timeout_s": timeout_s}},
        "providers": {
            "context": {"type": "http", "url": f"{providers.url}/context",
                        "headers": {"X-Cabinet": "{{labels.cabinet}}"},
                        "body": {"to": "{{recipient}}", "receiver": "{{receiver}}", "channel": "{{channel}}",
                                 "status": "{{status}}", "id": "{{fingerprint}}", "from": "{{starts_at}}",
                                 "until": "{{ends_at}}", "link": "{{generator_url}}", "where": "{{target}}",
                                 "rule": "{{labels.rule}}", "summary": "{{annotations.summary}}"}},
        },
        "receivers": {"ops": [{"channel": "app", "provider": "context", "to": ["oncall", "backup"]}]},
    }, source="test.yaml", env={})


def _dispatcher(providers: Providers, tmp_path: Path, session: aiohttp.ClientSession, *, attempts: int = 3,
                delay_s: float = 0.01) -> tuple[Dispatcher, CollectorRegistry, Path]:
    config = _config(providers, attempts, delay_s)
    registry = CollectorRegistry()
    log_path = tmp_path / "deliveries.jsonl"
    dispatcher = Dispatcher(config, session=session, metrics=create_metrics(registry),
                            log=DeliveryLog(log_path, lambda: NOW), clock=lambda: NOW, rng=random.Random(7))
    return dispatcher, registry, log_path


def _alert(**labels: str) -> WebhookAlert:
    return WebhookAlert("firing", {"alertname": "over_temperature", "rule": "over_temperature", "level": "2",
                                   "site": "s1", "cabinet": "c7", "slot": "4", **labels},
                        {"summary": "hot"}, "fp-1", "2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "http://engine/x")


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_templates_see_every_field_of_the_alert_and_the_delivery(providers: Providers, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        dispatcher, registry, log_path = _dispatcher(providers, tmp_path, session)
        assert dispatcher.dispatch("ops", [_alert()]) == 2
        await dispatcher.drain(5)
    bodies = sorted(providers.bodies["/context"], key=lambda b: b["to"])
    assert bodies[1] == {"to": "oncall", "receiver": "ops", "channel": "app", "status": "firing", "id": "fp-1",
                         "from": "2026-01-01T00:00:00Z", "until": "0001-01-01T00:00:00Z", "link": "http://engine/x",
                         "where": "s1/c7 slot 4", "rule": "over_temperature", "summary": "hot"}
    assert bodies[0]["to"] == "backup"
    records = sorted(_log(log_path), key=lambda r: r["recipient"])
    assert [{k: r[k] for k in ("receiver", "channel", "provider", "recipient", "fingerprint", "alertname", "status",
                               "attempts", "result", "code", "error")} for r in records] == [
        {"receiver": "ops", "channel": "app", "provider": "context", "recipient": r, "fingerprint": "fp-1",
         "alertname": "over_temperature", "status": "firing", "attempts": 1, "result": "sent", "code": 200,
         "error": None} for r in ("backup", "oncall")]
    assert all(0 <= r["duration_s"] < 5 for r in records)
    assert registry.get_sample_value("cascade_notify_deliveries_total", {"channel": "app", "result": "sent"}) == 2
    assert registry.get_sample_value("cascade_notify_delivery_seconds_count", {"channel": "app"}) == 2
    assert registry.get_sample_value("cascade_notify_delivery_seconds_sum", {"channel": "app"}) < 5


async def test_a_busy_provider_is_retried_up_to_the_attempts_then_the_delivery_fails(providers: Providers,
                                                                                     tmp_path: Path) -> None:
    providers.statuses["/context"] = [503] * 6
    async with aiohttp.ClientSession() as session:
        dispatcher, registry, log_path = _dispatcher(providers, tmp_path, session, attempts=3)
        dispatcher.dispatch("ops", [_alert()])
        await dispatcher.drain(5)
    assert len(providers.bodies["/context"]) == 6  # 3 attempts x 2 recipients
    records = _log(log_path)
    assert [(r["attempts"], r["result"], r["code"], r["error"]) for r in records] == [
        (3, "failed", 503, "HTTP 503: busy")] * 2
    assert registry.get_sample_value("cascade_notify_deliveries_total", {"channel": "app", "result": "failed"}) == 2


async def test_a_message_that_cannot_be_built_fails_at_once_and_the_others_go_on(providers: Providers,
                                                                               tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        dispatcher, _registry, log_path = _dispatcher(providers, tmp_path, session, attempts=3)
        started = dispatcher.dispatch("ops", [_alert(cabinet="c1\r\nX-Evil: 1"), _alert(alertname="next")])
        await dispatcher.drain(5)
    assert started == 4
    records = _log(log_path)
    bad = [r for r in records if r["alertname"] == "over_temperature"]
    assert [(r["attempts"], r["result"], r["code"]) for r in bad] == [(1, "failed", None)] * 2
    assert all(r["error"].startswith("ValueError: ") for r in bad)
    assert sorted(r["result"] for r in records if r["alertname"] == "next") == ["sent", "sent"]


async def test_a_delivery_cut_short_by_shutdown_is_logged_as_not_delivered(providers: Providers,
                                                                           tmp_path: Path) -> None:
    providers.statuses["/context"] = [503] * 10
    async with aiohttp.ClientSession() as session:
        dispatcher, registry, log_path = _dispatcher(providers, tmp_path, session, attempts=5, delay_s=30)
        dispatcher.dispatch("ops", [_alert()])
        while len(providers.bodies.get("/context", [])) < 2:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(dispatcher.close(timeout_s=0.05), 2)  # waits 0.05 s, then cancels
        await asyncio.sleep(0.05)
    records = _log(log_path)
    assert [(r["attempts"], r["result"], r["error"]) for r in records] == [
        (1, "failed", "notifier stopped before delivery (HTTP 503: busy)")] * 2
    assert registry.get_sample_value("cascade_notify_deliveries_total", {"channel": "app", "result": "failed"}) == 2


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() -> None:
    class Fixed(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [compute_backoff(n, 0.5, 3.0, Fixed()) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(1)
    assert all(0.25 <= compute_backoff(1, 0.5, 3.0, rng) <= 0.5 for _ in range(100))


@pytest.mark.parametrize(("labels", "text"), [
    ({"site": "s1", "cabinet": "c7", "slot": "4"}, "s1/c7 slot 4"),
    ({"site": "s1", "cabinet": "c7"}, "s1/c7"),
    ({"cabinet": "c7"}, "c7"),
    ({"component": "notifier"}, "notifier"),
    ({}, ""),
])
def test_the_target_in_words(labels: dict[str, str], text: str) -> None:
    assert describe_target(labels) == text


async def test_each_recipient_gets_the_message_in_its_own_language(providers: Providers) -> None:
    config = parse_config({
        "notifier": {"language": "zh_CN"},
        "providers": {"sms": {"type": "http", "url": f"{providers.url}/sms",
                              "body": {"to": "{{recipient}}", "text": "{{message.sms}}"}}},
        "receivers": {"ops": [{"channel": "sms", "provider": "sms", "to": [{"to": "+44", "language": "en"}, "+86"]}]},
    }, source="test.yaml", env={})
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(config, session=session, metrics=create_metrics(CollectorRegistry()),
                                log=DeliveryLog(None, lambda: NOW), clock=lambda: NOW, rng=random.Random(7))
        dispatcher.dispatch("ops", [_alert()])
        await dispatcher.drain(5)
    texts = {b["to"]: b["text"] for b in providers.bodies["/sms"]}
    assert texts["+44"].isascii() and "s1/c7" in texts["+44"]
    assert not texts["+86"].isascii()


async def test_drain_gives_up_after_its_timeout_and_retries_work_without_a_given_rng(providers: Providers,
                                                                                   tmp_path: Path) -> None:
    providers.statuses["/context"] = [503] * 10
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(_config(providers, attempts=2, delay_s=0.01), session=session, metrics=create_metrics(CollectorRegistry()),
                                log=DeliveryLog(tmp_path / "own.jsonl", lambda: NOW), clock=lambda: NOW)
        dispatcher.dispatch("ops", [_alert()])
        await dispatcher.drain(5)
        assert [(r["attempts"], r["result"]) for r in _log(tmp_path / "own.jsonl")] == [(2, "failed")] * 2

        slow, _registry, _path = _dispatcher(providers, tmp_path, session, attempts=3, delay_s=30)
        providers.statuses["/context"] = [503] * 10
        slow.dispatch("ops", [_alert()])
        await asyncio.wait_for(slow.drain(0.1), 2)  # returns after 0.1 s with both deliveries still waiting
        await slow.close(timeout_s=0)


def _plain_dispatcher(config, session: aiohttp.ClientSession, log_path: Path) -> Dispatcher:
    return Dispatcher(config, session=session, metrics=create_metrics(CollectorRegistry()),
                      log=DeliveryLog(log_path, lambda: NOW), clock=lambda: NOW, rng=random.Random(7))


async def test_deliveries_stopped_before_their_first_answer_say_not_attempted(providers: Providers,
                                                                           tmp_path: Path) -> None:
    providers.delay_s = 0.5
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 3, 0.01, concurrency=1), session, tmp_path / "d.jsonl")
        dispatcher.dispatch("ops", [_alert()])  # two recipients, one slot: the second waits for it
        while not providers.bodies.get("/context"):
            await asyncio.sleep(0.01)
        await asyncio.wait_for(dispatcher.close(timeout_s=0.05), 2)
        await asyncio.sleep(0.05)
    records = _log(tmp_path / "d.jsonl")
    assert [(r["attempts"], r["result"], r["code"], r["error"]) for r in records] == [
        (1, "failed", None, "notifier stopped before delivery (not attempted)")] * 2


async def test_a_provider_that_does_not_answer_times_out_and_durations_are_in_milliseconds(
        providers: Providers, tmp_path: Path) -> None:
    providers.delay_s = 0.5
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 1, 0.01, timeout_s=0.3), session, tmp_path / "d.jsonl")
        dispatcher.dispatch("ops", [_alert()])
        await dispatcher.drain(5)
    records = _log(tmp_path / "d.jsonl")
    assert [(r["attempts"], r["result"], r["error"]) for r in records] == [(1, "failed", "timeout after 0.3s")] * 2
    assert all(0.3 <= r["duration_s"] < 1 and r["duration_s"] == round(r["duration_s"], 3) for r in records)


async def test_an_alert_without_a_name_is_logged_with_an_empty_name(providers: Providers, tmp_path: Path) -> None:
    alert = WebhookAlert("firing", {"level": "2", "site": "s1"}, {}, "fp-2", "", "", "")
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 1, 0.01), session, tmp_path / "d.jsonl")
        dispatcher.dispatch("ops", [alert])
        await dispatcher.drain(5)
    assert [r["alertname"] for r in _log(tmp_path / "d.jsonl")] == ["", ""]


async def test_finished_deliveries_are_not_kept_and_end_normally(providers: Providers, tmp_path: Path) -> None:
    """Once a delivery is done the dispatcher lets go of its task (a long-running notifier must not
    pile up one task per message sent), and a delivery that ran to its end is not reported as cancelled."""
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 2, 0.01), session, tmp_path / "d.jsonl")
        before = asyncio.all_tasks()
        dispatcher.dispatch("ops", [_alert()])
        tasks = asyncio.all_tasks() - before
        await dispatcher.drain(5)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert len(tasks) == 2 and all(t.done() and not t.cancelled() for t in tasks)
    assert dispatcher._tasks == set()
    assert [r["result"] for r in _log(tmp_path / "d.jsonl")] == ["sent", "sent"]


async def test_deliveries_stopped_by_shutdown_end_cancelled(providers: Providers, tmp_path: Path) -> None:
    """A delivery cut short by close() writes its "not delivered" record and then lets the cancellation
    through: the task ends cancelled rather than swallowing it and looking finished."""
    providers.statuses["/context"] = [503] * 10
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 5, 30), session, tmp_path / "d.jsonl")
        before = asyncio.all_tasks()
        dispatcher.dispatch("ops", [_alert()])
        tasks = asyncio.all_tasks() - before
        while len(providers.bodies.get("/context", [])) < 2:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(dispatcher.close(timeout_s=0.01), 2)
        await asyncio.wait(tasks, timeout=2)
    assert len(tasks) == 2 and all(t.cancelled() for t in tasks)
    assert [r["result"] for r in _log(tmp_path / "d.jsonl")] == ["failed", "failed"]


async def test_a_delivery_that_used_its_last_attempt_fails_at_once(providers: Providers, tmp_path: Path) -> None:
    """No backoff after the final try: with one attempt and a 30 s retry delay, a busy provider's
    delivery is logged as failed right away, not after one more (pointless) wait."""
    providers.statuses["/context"] = [503] * 10
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 1, 30), session, tmp_path / "d.jsonl")
        dispatcher.dispatch("ops", [_alert()])
        await asyncio.wait_for(dispatcher.drain(2), 3)
        records = _log(tmp_path / "d.jsonl") if (tmp_path / "d.jsonl").exists() else []
        await dispatcher.close(timeout_s=0)
    assert [(r["attempts"], r["result"], r["error"]) for r in records] == [(1, "failed", "HTTP 503: busy")] * 2
    assert len(providers.bodies["/context"]) == 2
    assert all(r["duration_s"] < 2 for r in records)


async def test_close_by_default_gives_accepted_deliveries_the_documented_ten_seconds(
        providers: Providers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/notifications.md: "On shutdown the notifier waits up to 10s for accepted deliveries to finish"
    (the server calls close() without a timeout). The wait is recorded, not slept."""
    providers.statuses["/context"] = [503] * 10
    async with aiohttp.ClientSession() as session:
        dispatcher = _plain_dispatcher(_config(providers, 3, 30), session, tmp_path / "d.jsonl")
        real_drain = dispatcher.drain
        waited: list[float | None] = []

        async def drain(timeout_s: float | None = None) -> None:
            waited.append(timeout_s)
            await real_drain(0.01)

        monkeypatch.setattr(dispatcher, "drain", drain)
        before = asyncio.all_tasks()
        dispatcher.dispatch("ops", [_alert()])
        tasks = asyncio.all_tasks() - before
        while len(providers.bodies.get("/context", [])) < 2:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(dispatcher.close(), 2)
        await asyncio.wait(tasks, timeout=2)
    assert waited == [10.0]
    assert all(t.cancelled() for t in tasks)  # what is still waiting after the grace is stopped
