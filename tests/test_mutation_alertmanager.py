"""The Alertmanager push (alerting/alertmanager.py) seen from the HTTP side: exactly what is posted
(alerts, batches, silences), what is counted, and what is retried. Written to kill the mutants
`make mutate` found alive. A local aiohttp app stands in for Alertmanager's API v2 so a test can
script failures and read every request; tests/test_alert_service.py runs the real Alertmanager."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from alerting.alertmanager import AlertmanagerPusher, label_key
from tests.fixtures.clock import T0, ManualClock
from tests.fixtures.http import start_app

T0_TEXT = "2023-11-14T22:13:20.000Z"  # T0 as RFC 3339, written out


class StandIn:
    """Alertmanager API v2 stand-in: records alerts and silences; ``statuses`` scripts answers."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each POST /alerts
        self.statuses: list[int] = []  # answers for POST /alerts, in turn, then 200
        self.alert_delays: list[float] = []  # seconds before answering POST /alerts, in turn, then none
        self.silence_posts: list[dict[str, Any]] = []
        self.silence_status = 200
        self.silence_delay_s = 0.0
        self.silences: list[dict[str, Any]] = []  # what GET /silences lists
        self.deleted: list[str] = []
        self.delete_status = 200
        self.list_status = 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _alerts(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        if self.alert_delays:
            await asyncio.sleep(self.alert_delays.pop(0))
        self.authorizations.append(request.headers.get("Authorization"))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="x" * 300 if status >= 300 else "")

    async def _post_silence(self, request: web.Request) -> web.Response:
        self.silence_posts.append(await request.json())
        await asyncio.sleep(self.silence_delay_s)
        if self.silence_status >= 300:
            return web.Response(status=self.silence_status, text="no")
        return web.json_response({"silenceID": f"sil-{len(self.silence_posts)}"})

    async def _list_silences(self, request: web.Request) -> web.Response:
        if self.list_status >= 300:
            return web.Response(status=self.list_status, text="unavailable")
        return web.json_response(self.silences)

    async def _delete_silence(self, request: web.Request) -> web.Response:
        self.deleted.append(request.match_info["id"])
        return web.Response(status=self.delete_status)

    async def __aenter__(self) -> StandIn:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self._alerts)
        app.router.add_post("/api/v2/silences", self._post_silence)
        app.router.add_get("/api/v2/silences", self._list_silences)
        app.router.add_delete("/api/v2/silence/{id}", self._delete_silence)
        self._runner, self.url = await start_app(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [a for body in self.posts for a in body]


async def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def _pusher(url: str, clock: ManualClock, registry: CollectorRegistry | None = None, **kwargs: Any):
    kwargs.setdefault("retry_initial_s", 0.01)
    kwargs.setdefault("retry_max_s", 0.02)
    return AlertmanagerPusher(url, resend_interval_s=60.0, clock=clock, registry=registry, **kwargs)


# -- construction ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["127.0.0.1:9093", "ftp://am", "", "HTTP://am"])
def test_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ValueError) as info:
        AlertmanagerPusher(url)
    assert str(info.value) == f"alertmanager url {url!r} must start with http:// or https://"


@pytest.mark.parametrize("resend", [0, -1.0])
def test_resend_interval_must_be_positive(resend: float) -> None:
    with pytest.raises(ValueError) as info:
        AlertmanagerPusher("http://am:9093", resend_interval_s=resend)
    assert str(info.value) == "resend_interval_s must be > 0: Alertmanager drops alerts that are not re-sent"


def test_api_urls_from_a_base_url_with_or_without_slash() -> None:
    for base in ("https://am.example:9093", "https://am.example:9093/"):
        pusher = AlertmanagerPusher(base, resend_interval_s=1)
        assert pusher.url == "https://am.example:9093/api/v2/alerts"
        assert pusher.silences_url == "https://am.example:9093/api/v2/silences"
        assert pusher.resend_interval_s == 1.0 and type(pusher.resend_interval_s) is float
        assert pusher.up is True and pusher.active == {} and pusher.pending == {} and pusher.silences == {}


def test_label_key_is_the_sorted_label_set() -> None:
    assert label_key({"level": "2", "alertname": "x"}) == (("alertname", "x"), ("level", "2"))
    assert label_key({"b": "1", "a": "2"}) == label_key({"a": "2", "b": "1"})


# -- state, without pushing -----------------------------------------------------------------------

def test_fire_start_is_the_earlier_of_given_and_now_and_a_refire_keeps_it() -> None:
    clock = ManualClock(T0)
    pusher = _pusher("http://am", clock)
    labels = {"alertname": "a"}
    pusher.fire(labels, {"summary": "s"}, starts_at=T0 + 100)  # from the future: now
    assert pusher.active[label_key(labels)] == (labels, {"summary": "s"}, T0)
    clock.advance(50)
    pusher.fire(labels, {"summary": "t"}, starts_at=T0 - 999)  # already active: keeps its start
    assert pusher.active[label_key(labels)] == (labels, {"summary": "t"}, T0)
    other = {"alertname": "b"}
    pusher.fire(other, {})
    assert pusher.active[label_key(other)][2] == T0 + 50
    pusher.fire({"alertname": "c"}, {}, starts_at=T0 - 5)
    assert pusher.active[label_key({"alertname": "c"})][2] == T0 - 5
    assert pusher.is_firing(labels) and not pusher.is_firing({"alertname": "zz"})


def test_resolve_keeps_the_notes_unless_given_new_ones() -> None:
    clock = ManualClock(T0)
    pusher = _pusher("http://am", clock)
    pusher.fire({"alertname": "a"}, {"summary": "old"}, starts_at=T0 - 10)
    clock.advance(5)
    pusher.resolve({"alertname": "a"})
    change = pusher.pending[label_key({"alertname": "a"})]
    assert (change.annotations, change.starts, change.ends, change.status) == ({"summary": "old"}, T0 - 10, T0 + 5,
                                                                              "resolved")
    pusher.fire({"alertname": "b"}, {"summary": "old"})
    pusher.resolve({"alertname": "b"}, {"summary": "new"})
    assert pusher.pending[label_key({"alertname": "b"})].annotations == {"summary": "new"}
    pusher.resolve({"alertname": "never"})  # not active: starts and ends now, no notes
    change = pusher.pending[label_key({"alertname": "never"})]
    assert (change.annotations, change.starts, change.ends) == ({}, T0 + 5, T0 + 5)
    assert not pusher.is_firing({"alertname": "a"})


def test_a_full_queue_drops_the_oldest_change_and_counts_it() -> None:
    registry = CollectorRegistry()
    pusher = _pusher("http://am", ManualClock(T0), registry, max_pending=2)
    for name in ("a", "b", "c", "d"):
        pusher.fire({"alertname": name}, {})
    pusher.fire({"alertname": "c"}, {"summary": "again"})  # moves c to the newest place
    pusher.fire({"alertname": "e"}, {})
    assert [dict(k)["alertname"] for k in pusher.pending] == ["c", "e"]
    assert _sample(registry, "cascade_alert_push_dropped_total") == 3
    assert _sample(registry, "cascade_alert_push_pending") == 2


# -- pushing ----------------------------------------------------------------------------------------

async def test_pushes_in_batches_with_times_and_generator_url_and_counts_by_status() -> None:
    clock = ManualClock(T0)
    registry = CollectorRegistry()
    pushed: list[tuple[list[dict[str, Any]], float]] = []
    async with StandIn() as am:
        pusher = _pusher(am.url, clock, registry, batch_size=2, generator_url="http://cascade:9108/alerts",
                         on_pushed=lambda body, at: pushed.append((body, at)))
        for name in ("a", "b", "c"):
            pusher.fire({"alertname": name}, {"summary": name}, starts_at=T0)
        pusher.resolve({"alertname": "d"})
        async with pusher:
            # The stand-in has a batch before its answer reaches the pusher: wait for the answer too, or
            # the exit's last push (for changes not yet answered) sends the second batch again.
            await _until(lambda: len(am.alerts) == 4 and not pusher.pending)
        assert [len(body) for body in am.posts] == [2, 2]
        first = am.alerts[0]
        assert first == {"labels": {"alertname": "a"}, "annotations": {"summary": "a"}, "startsAt": T0_TEXT,
                         "endsAt": "2023-11-14T22:17:20.000Z", "generatorURL": "http://cascade:9108/alerts"}
        assert am.alerts[3]["endsAt"] == T0_TEXT and am.alerts[3]["startsAt"] == T0_TEXT
        assert [at for _, at in pushed] == [T0, T0] and [len(body) for body, _ in pushed] == [2, 2]
        assert _sample(registry, "cascade_alert_pushed_total", {"status": "firing"}) == 3
        assert _sample(registry, "cascade_alert_pushed_total", {"status": "resolved"}) == 1
        assert _sample(registry, "cascade_alert_push_failures_total") == 0
        assert pusher.pending == {}


async def test_without_a_generator_url_none_is_sent() -> None:
    async with StandIn() as am:
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: am.alerts)
        assert "generatorURL" not in am.alerts[0]
        assert _ts(am.alerts[0]["endsAt"]) == T0 + 240


async def test_failed_pushes_are_counted_retried_and_recovered() -> None:
    registry = CollectorRegistry()
    async with StandIn() as am:
        am.statuses = [500, 502, 503]
        async with _pusher(am.url, ManualClock(T0), registry) as pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: len(am.posts) >= 2)
            assert pusher.up is False and pusher.pending
            await _until(lambda: len(am.posts) == 4 and not pusher.pending)
            await _until(lambda: pusher.up)
        assert _sample(registry, "cascade_alert_push_failures_total") == 3
        assert _sample(registry, "cascade_alert_pushed_total", {"status": "firing"}) == 1
        assert all(body == am.posts[0] for body in am.posts)


async def test_a_change_made_while_a_push_is_in_flight_is_pushed_after_it() -> None:
    clock = ManualClock(T0)
    async with StandIn() as am:
        async with _pusher(am.url, clock) as pusher:
            pusher.fire({"alertname": "a"}, {"summary": "1"})
            await _until(lambda: am.posts)
            pusher.resolve({"alertname": "a"})
            await _until(lambda: len(am.posts) == 2 and not pusher.pending)  # answered too (see above)
        assert [a["annotations"] for a in am.alerts] == [{"summary": "1"}, {"summary": "1"}]
        assert am.alerts[1]["endsAt"] == T0_TEXT


async def test_changes_left_at_exit_get_one_last_push() -> None:
    async with StandIn() as am:
        pusher = _pusher(am.url, ManualClock(T0))
        async with pusher:
            await asyncio.sleep(0)
            am.statuses = [500]
            pusher.fire({"alertname": "late"}, {})
            await _until(lambda: am.posts)  # the first try fails; the retry is 10-20 ms away
            pusher.resolve({"alertname": "late"})
        assert am.alerts[-1]["labels"] == {"alertname": "late"} and am.alerts[-1]["endsAt"] == T0_TEXT


async def test_a_final_push_that_fails_does_not_fail_the_shutdown() -> None:
    async with StandIn() as am:
        am.statuses = [500] * 50
        pusher = _pusher(am.url, ManualClock(T0), retry_initial_s=5.0, retry_max_s=5.0)
        async with pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: am.posts)
        assert len(am.posts) == 2 and pusher.pending


# -- acknowledgement silences ----------------------------------------------------------------------

async def test_an_acknowledgement_posts_an_exact_silence_and_remembers_its_id() -> None:
    clock = ManualClock(T0)
    labels = {"level": "3", "alertname": "thermal_runaway", "cabinet": "c1"}
    async with StandIn() as am:
        async with _pusher(am.url, clock) as pusher:
            pusher.silence(labels, who="noc-li", comment=" on my way ", until=T0 + 30)  # < 60 s: one minute
            await _until(lambda: pusher.silences)
            pusher.silence({"alertname": "b"}, who="x", comment="", until=T0 + 3600)
            await _until(lambda: len(pusher.silences) == 2)
        assert am.silence_posts[0] == {
            "matchers": [{"name": "alertname", "value": "thermal_runaway", "isRegex": False, "isEqual": True},
                         {"name": "cabinet", "value": "c1", "isRegex": False, "isEqual": True},
                         {"name": "level", "value": "3", "isRegex": False, "isEqual": True}],
            "startsAt": T0_TEXT, "endsAt": "2023-11-14T22:14:20.000Z",
            "createdBy": "noc-li (acknowledged in Cascade)", "comment": "cascade-ack:  on my way"}
        assert am.silence_posts[1]["endsAt"] == "2023-11-14T23:13:20.000Z"
        assert am.silence_posts[1]["comment"] == "cascade-ack:"
        assert pusher.silences == {label_key(labels): "sil-1", label_key({"alertname": "b"}): "sil-2"}


@pytest.mark.parametrize("status", [300, 400])
async def test_a_refused_silence_is_not_remembered_and_says_so(status: int, caplog) -> None:
    async with StandIn() as am:
        am.silence_status = status
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.silence({"alertname": "a"}, who="x", comment="c", until=T0 + 600)
            await _until(lambda: am.silence_posts)
            await asyncio.sleep(0.05)
        assert pusher.silences == {}
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING, f"alertmanager: could not silence acknowledged alert a ({status}, message='no', "
                         f"url='{am.url}/api/v2/silences'); it keeps paging")]


async def test_a_silence_request_that_hangs_gives_up_after_the_timeout(caplog) -> None:
    async with StandIn() as am:
        am.silence_delay_s = 0.6
        async with _pusher(am.url, ManualClock(T0), timeout_s=0.1) as pusher:
            pusher.silence({"alertname": "a"}, who="x", comment="c", until=T0 + 600)
            await _until(lambda: caplog.records, timeout_s=2)
        assert pusher.silences == {}
    assert caplog.records[0].getMessage().startswith("alertmanager: could not silence acknowledged alert a (")


async def test_an_acknowledgement_is_logged_with_who(caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerting.alertmanager")
    async with StandIn() as am:
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.silence({"alertname": "thermal_runaway"}, who="noc-li", comment="c", until=T0 + 600)
            await _until(lambda: pusher.silences)
    assert (logging.INFO, "alertmanager: thermal_runaway acknowledged by noc-li: repeat notifications silenced") in [
        (r.levelno, r.getMessage()) for r in caplog.records]


async def test_firing_alerts_are_re_sent_every_interval_as_they_were_fired() -> None:
    clock = ManualClock(T0)
    async with StandIn() as am:
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.1, clock=clock, retry_initial_s=0.01,
                                    retry_max_s=0.02)
        async with pusher:
            pusher.fire({"alertname": "a", "level": "2"}, {"summary": "hot"}, starts_at=T0 - 10)
            await _until(lambda: len(am.posts) >= 3, timeout_s=3)
            started = time.monotonic()
            seen = len(am.posts)
            await asyncio.sleep(0.35)
            resent = len(am.posts) - seen
            elapsed = time.monotonic() - started
        assert 1 <= resent <= elapsed / 0.1 + 1  # one per interval, not one per loop
        for alert in am.alerts:
            assert alert["labels"] == {"alertname": "a", "level": "2"}
            assert alert["annotations"] == {"summary": "hot"} and alert["startsAt"] == "2023-11-14T22:13:10.000Z"
            assert _ts(alert["endsAt"]) > T0


async def test_unsilence_expires_the_remembered_silence() -> None:
    async with StandIn() as am:
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.silence({"alertname": "a"}, who="x", comment="c", until=T0 + 600)
            await _until(lambda: pusher.silences)
            pusher.unsilence({"alertname": "a"})
            await _until(lambda: am.deleted)
        assert am.deleted == ["sil-1"] and pusher.silences == {}


async def test_unsilence_after_a_restart_finds_only_our_live_silence_for_exactly_these_labels(caplog) -> None:
    labels = {"alertname": "a", "level": "2"}
    matchers = [{"name": "level", "value": "2"}, {"name": "alertname", "value": "a"}]

    def silence(sid: str, state: str = "active", comment: str = "cascade-ack: x", match=matchers) -> dict:
        return {"id": sid, "status": {"state": state}, "comment": comment, "matchers": match}

    async with StandIn() as am:
        am.silences = [
            {"id": "no-matchers", "status": {"state": "active"}, "comment": "cascade-ack: x"},
            silence("ours"), silence("pending-ours", state="pending"), silence("old", state="expired"),
            silence("someone-elses", comment="maintenance"), silence("no-comment", comment=""),
            silence("wider", match=matchers[:1]), silence("other-level", match=[matchers[1],
                                                                                  {"name": "level", "value": "3"}]),
            {"id": "bare"},
        ]
        am.delete_status = 404  # already gone is fine
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.unsilence(labels)
            await _until(lambda: len(am.deleted) == 2)
            await asyncio.sleep(0.05)
        assert am.deleted == ["ours", "pending-ours"]
    assert caplog.records == []  # a 404 (already expired) is no failure


@pytest.mark.parametrize(("status", "warned"), [(200, False), (404, False), (300, True), (500, True)])
async def test_a_failed_expiry_is_logged_with_the_silence_and_status(status: int, warned: bool, caplog) -> None:
    async with StandIn() as am:
        am.delete_status = status
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.silence({"alertname": "a"}, who="x", comment="c", until=T0 + 600)
            await _until(lambda: pusher.silences)
            pusher.unsilence({"alertname": "a"})
            await _until(lambda: am.deleted)
    expected = [(logging.WARNING, f"alertmanager: expiring silence sil-1: HTTP {status}")] if warned else []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == expected


async def test_when_the_silences_cannot_be_listed_nothing_is_expired(caplog) -> None:
    async with StandIn() as am:
        am.list_status = 503
        am.silences = [{"id": "ours", "status": {"state": "active"}, "comment": "cascade-ack: x",
                        "matchers": [{"name": "alertname", "value": "a"}]}]
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.unsilence({"alertname": "a"})
            await asyncio.sleep(0.1)
        assert am.deleted == []
    assert caplog.records == []


async def test_silences_without_a_running_loop_do_nothing() -> None:
    pusher = _pusher("http://127.0.0.1:9", ManualClock(T0))
    await asyncio.to_thread(pusher.silence, {"alertname": "a"}, who="x", comment="c", until=T0)
    await asyncio.to_thread(pusher.unsilence, {"alertname": "a"})
    assert pusher.silences == {}


async def test_an_outage_is_logged_once_with_the_fix_and_the_recovery_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerting.alertmanager")
    async with StandIn() as am:
        am.statuses = [300, 500, 500]
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.fire({"alertname": "a"}, {})
            pusher.fire({"alertname": "b"}, {})
            await _until(lambda: len(am.posts) == 4 and pusher.up)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"alertmanager {am.url}/api/v2/alerts: push failed (HTTP 300: {'x' * 200}); retrying with "
                        "backoff, 2 changes pending. Check that Alertmanager runs and alerting.alertmanager_url "
                        "points at it"),
        (logging.INFO, f"alertmanager {am.url}/api/v2/alerts: pushes succeed again"),
    ]


async def test_a_failed_final_push_is_logged(caplog) -> None:
    async with StandIn() as am:
        am.statuses = [500] * 50
        async with _pusher(am.url, ManualClock(T0), retry_initial_s=5.0, retry_max_s=5.0) as pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: am.posts)
    assert caplog.records[-1].getMessage() == (
        f"alertmanager: final push failed (HTTP 500: {'x' * 200}); Alertmanager will time the alerts out")


async def test_pushing_goes_on_after_idle_wake_ups_and_a_given_session_stays_open() -> None:
    async with StandIn() as am, aiohttp.ClientSession() as session:
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.02, clock=ManualClock(T0), session=session)
        async with pusher:
            await asyncio.sleep(0.1)  # several re-send timers with nothing to send
            pusher.fire({"alertname": "late"}, {})
            await _until(lambda: am.posts, timeout_s=0.8)
        assert not session.closed
        async with session.get(f"{am.url}/api/v2/silences") as resp:
            assert resp.status == 200


async def test_a_given_session_is_the_one_that_pushes() -> None:
    """A session built with what Alertmanager's proxy needs (here a bearer token) carries every push."""
    async with StandIn() as am, aiohttp.ClientSession(headers={"Authorization": "Bearer am-token"}) as session:
        async with AlertmanagerPusher(am.url, clock=ManualClock(T0), session=session) as pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: am.posts)
        assert am.authorizations == ["Bearer am-token"]


async def test_nothing_is_pushed_after_exit() -> None:
    """The background push stops with the pusher: no re-sends from a pusher the service has closed
    (its session, given here, stays open, so a push would still reach Alertmanager)."""
    async with StandIn() as am, aiohttp.ClientSession() as session:
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.02, clock=ManualClock(T0), session=session)
        async with pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: len(am.posts) >= 2)  # re-sent at least once
        await asyncio.sleep(0.05)  # a request the exit cut short may still be arriving
        posted = len(am.posts)
        await asyncio.sleep(0.2)  # ten re-send intervals
        assert len(am.posts) == posted


async def test_periodic_re_sends_count_as_firing() -> None:
    registry = CollectorRegistry()
    async with StandIn() as am:
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.02, clock=ManualClock(T0), registry=registry)
        async with pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: len(am.posts) >= 3)  # posts go one at a time: the fire and a re-send are counted
    statuses = {s.labels["status"]: s.value for m in registry.collect() if m.name == "cascade_alert_pushed"
                for s in m.samples if s.name == "cascade_alert_pushed_total"}
    assert list(statuses) == ["firing"] and statuses["firing"] >= 2


async def test_an_unreadable_silence_list_is_logged(caplog) -> None:
    async with StandIn() as am:
        am.silences = "not a list"  # type: ignore[assignment]
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.unsilence({"alertname": "a"})
            await _until(lambda: caplog.records)
    assert caplog.records[0].getMessage().startswith(
        "alertmanager: could not expire the acknowledgement silence of a (")


async def test_a_push_that_fails_after_idle_wake_ups_is_retried_and_delivered() -> None:
    """Idle wake-ups (re-send timers with nothing to send) leave the pusher ready to back off: the first
    change after them, refused once by Alertmanager, is retried and delivered (the push task lives on)."""
    async with StandIn() as am:
        am.statuses = [503]
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.02, clock=ManualClock(T0), retry_initial_s=0.01)
        async with pusher:
            await asyncio.sleep(0.1)  # several re-send timers with nothing to send
            pusher.fire({"alertname": "late"}, {})
            await _until(lambda: len(am.posts) == 2 and not pusher.pending, timeout_s=2.0)
            assert pusher.up and not pusher._task.done()


def test_the_push_metrics_say_what_they_count() -> None:
    """The help texts Prometheus and Grafana show next to the series."""
    registry = CollectorRegistry()
    AlertmanagerPusher("http://am:9093", registry=registry)
    docs = {m.name: m.documentation for m in registry.collect()}
    assert docs == {
        "cascade_alert_push_failures": "Alertmanager pushes that failed (each failed request; retried)",
        "cascade_alert_pushed": "Alerts delivered to Alertmanager, by status",
        "cascade_alert_push_dropped": "Alert changes dropped because the pending queue was full",
        "cascade_alert_push_pending": "Alert changes waiting to be pushed"}


async def test_the_push_and_silence_tasks_are_named_for_whoever_reads_a_task_dump() -> None:
    async with StandIn() as am:
        am.silence_delay_s = 0.2
        async with _pusher(am.url, ManualClock(T0)) as pusher:
            pusher.silence({"alertname": "a"}, who="x", comment="c", until=T0 + 600)
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert {"alertmanager-push", "alertmanager-silence"} <= names


async def test_a_push_that_hangs_past_the_timeout_is_a_failure_counted_and_retried() -> None:
    registry = CollectorRegistry()
    async with StandIn() as am:
        am.alert_delays = [1.0]  # the first push hangs for a second; the timeout is 0.2 s
        async with _pusher(am.url, ManualClock(T0), registry, timeout_s=0.2) as pusher:
            pusher.fire({"alertname": "a"}, {})
            await _until(lambda: len(am.posts) == 2 and not pusher.pending, timeout_s=3)
        assert _sample(registry, "cascade_alert_push_failures_total") == 1
        assert _sample(registry, "cascade_alert_pushed_total", {"status": "firing"}) == 1


def test_the_resend_interval_is_a_minute_unless_given() -> None:
    """docs/alert-service.md: firing alerts are re-sent every resend_interval_s (60), endsAt 4 of them ahead."""
    assert AlertmanagerPusher("http://am:9093").resend_interval_s == 60.0
