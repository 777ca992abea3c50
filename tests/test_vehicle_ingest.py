"""Vehicle ingest: the bad-payload corpus refused with reasons and counted with no good report lost,
over MQTT (real Mosquitto, ACL, TLS) and HTTPS (signed batches), and two workers sharing one stream.

The corpus is data (``tests/vehicle_cases/corpus.jsonl``): each line a payload and what must become
of it, a refusal reason or ``stored`` (with the values that must be dropped or kept at a limit).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from cascade.vehicles import IngestWorker
from collectors.vehicles.https import https_app
from collectors.vehicles.ingest import REASONS, IngestMetrics, VehicleIngest
from collectors.vehicles.mqtt import topic
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.trust import DeviceRegistry, Gate, sign
from exporters.influx.sink import InfluxConfig
from tests.fixtures.influxdb import InfluxDB
from tests.fixtures.mosquitto import Mosquitto

CORPUS = Path(__file__).parent / "vehicle_cases" / "corpus.jsonl"


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(case: dict[str, Any], seq: int, now: float) -> bytes:
    now_ms = int(now * 1000)
    text = case["payload"]
    for key, value in {"{seq}": str(seq), "{now_ms}": str(now_ms), "{hour_ago_ms}": str(now_ms - 3_600_000),
                       "{hour_ahead_ms}": str(now_ms + 3_600_000), "{big}": "x" * 9000,
                       "{deep}": "[" * 500 + "]" * 500}.items():
        text = text.replace(key, value)
    return text.encode()


def report(vehicle: str, seq: int, ts_ms: int, *, lat: float = 39.92, soc: float = 80.0,
           battery: str = "B1") -> bytes:
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": ts_ms, "state": "riding", "power": True,
                       "pos": {"valid": True, "lat": lat, "lon": 116.54, "alt": 40.0}, "speed_kmh": 18,
                       "odometer_km": 1000 + seq, "battery": {"id": battery, "soc_pct": soc, "voltage_v": 50.1,
                                                               "temperature_c": 28, "current_a": -7.5,
                                                               "cycles": 120}}).encode()


def rejected(metrics: IngestMetrics, transport: str, reason: str) -> float:
    return metrics.rejected.labels(transport, reason)._value.get()


@pytest.fixture
def devices(tmp_path: Path) -> DeviceRegistry:
    from cascade.vehicles import provision
    return DeviceRegistry.load(provision(tmp_path / "devices", count=3, fleet="bj")["devices"])


class Sink:
    def __init__(self) -> None:
        self.points: list[Any] = []

    def submit(self, points: Any) -> None:
        self.points.extend(points)


# -- the corpus, one report at a time (both transports' shared path) ----------------------------

@pytest.mark.parametrize("case", corpus(), ids=lambda c: c["name"])
def test_corpus_case_refused_with_its_reason_or_stored(case: dict[str, Any], devices: DeviceRegistry) -> None:
    now = time.time()
    sink = Sink()
    ingest = VehicleIngest(devices, sink=sink, clock=lambda: now)
    data = render(case, 5, now)
    device, fleet = case.get("device", "V000001"), case.get("fleet", "bj")
    outcome = ingest.accept(data, transport="mqtt", device=device, fleet=fleet)
    if case.get("send_twice"):
        assert outcome.ok
        outcome = ingest.accept(data, transport="mqtt", device=device, fleet=fleet)
    if case["expect"] == "stored":
        assert outcome.ok, outcome
        reading = sink.points[-1]
        dropped = sorted(ingest.metrics.values_rejected._metrics)
        assert [name for (name,) in dropped] == sorted(case.get("values_rejected", []))
        over = reading.over_range + (reading.battery.over_range if reading.battery else ())
        assert list(over) == case.get("over_range", [])
    else:
        assert outcome.reason == case["expect"], outcome
        assert outcome.detail  # says what and where
        assert rejected(ingest.metrics, "mqtt", case["expect"]) == 1
        assert len(sink.points) == (1 if case.get("send_twice") else 0)  # nothing of it stored


def test_every_refusal_reason_is_explained() -> None:
    expected = {c["expect"] for c in corpus()} - {"stored"}
    assert expected <= set(REASONS)
    assert all(REASONS.values())


def test_device_restart_resets_its_sequence_but_a_replay_is_refused(devices: DeviceRegistry) -> None:
    now = time.time()
    ingest = VehicleIngest(devices, sink=Sink(), clock=lambda: now, gate=Gate(rate_per_s=1000, burst=1000))
    t = int(now * 1000) - 60_000
    for seq in range(100, 200):
        assert ingest.accept(report("V000001", seq, t + seq), transport="mqtt", device="V000001").ok
    assert ingest.accept(report("V000001", 150, t + 150), transport="mqtt", device="V000001").reason == "duplicate"
    assert ingest.accept(report("V000001", 5, t + 5), transport="mqtt", device="V000001").reason == "replayed"
    # Restarted device: counts from 0 again with a newer clock.
    assert ingest.accept(report("V000001", 0, t + 50_000), transport="mqtt", device="V000001").ok
    assert ingest.accept(report("V000001", 1, t + 50_001), transport="mqtt", device="V000001").ok


def test_a_flooding_device_is_rate_limited_and_others_are_not(devices: DeviceRegistry) -> None:
    now = [time.time()]
    ingest = VehicleIngest(devices, sink=Sink(), clock=lambda: now[0])
    t = int(now[0] * 1000)
    outcomes = [ingest.accept(report("V000001", s, t), transport="mqtt", device="V000001").reason
                for s in range(1, 101)]
    assert outcomes.count("") == 30 and outcomes.count("rate_limited") == 70  # burst 30
    assert ingest.accept(report("V000002", 1, t), transport="mqtt", device="V000002").ok
    now[0] += 10  # 0.5 reports/s refill: five more
    more = [ingest.accept(report("V000001", s, t), transport="mqtt", device="V000001").ok for s in range(200, 210)]
    assert sum(more) == 5


# -- HTTPS ----------------------------------------------------------------------------------------

async def _https_server(devices: DeviceRegistry, sink: Sink) -> tuple[TestServer, VehicleIngest]:
    ingest = VehicleIngest(devices, sink=sink)
    server = TestServer(https_app(HttpsSettings(max_body_bytes=64 * 1024, max_batch=50), ingest),
                                           host="127.0.0.1")
    await server.start_server()
    return server, ingest


def _not_json(name: str) -> None:
    raise ValueError(name)


def _headers(devices: DeviceRegistry, device: str, body: bytes, *, ts_ms: int | None = None,
             nonce: str | None = None, secret: bytes | None = None) -> dict[str, str]:
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    nonce = nonce or uuid.uuid4().hex
    known = devices.get(device)
    key = secret if secret is not None else (known.secret if known else b"0" * 16)
    return {"X-Cascade-Device": device, "X-Cascade-Timestamp": str(ts_ms), "X-Cascade-Nonce": nonce,
            "X-Cascade-Signature": sign(key, ts_ms, nonce, body), "Content-Type": "application/json"}


async def test_https_batch_keeps_good_reports_and_refuses_the_corpus(devices: DeviceRegistry) -> None:
    sink = Sink()
    server, ingest = await _https_server(devices, sink)
    now = time.time()
    cases = [c for c in corpus() if c.get("transport", "https") == "https" and not c.get("send_twice")
             and "device" not in c]
    good = [report("V000001", 1000 + i, int(now * 1000) - 3_600_000 + i) for i in range(3)]  # buffered an hour
    items = [render(c, 10 + i, now) for i, c in enumerate(cases)]
    # A batch is a JSON array: each item must itself be JSON to be an array element; items that are
    # not (the not-JSON cases) are sent alone below.
    array_items, alone = [], []
    for case, item in zip(cases, items):
        try:
            json.loads(item, parse_constant=_not_json)  # strict JSON: no NaN
            array_items.append((case, item))
        except ValueError:
            alone.append((case, item))
    body = b"[" + b",".join([*good, *(item for _, item in array_items)]) + b"]"
    async with aiohttp.ClientSession() as session:
        resp = await session.post(server.make_url("/v1/telemetry"), data=body,
                                  headers=_headers(devices, "V000001", body))
        result = await resp.json()
        assert resp.status == 200, result
        stored_cases = [c for c, _ in array_items if c["expect"] == "stored"]
        assert result["accepted"] == len(good) + len(stored_cases)
        refused = {r["index"]: r["reason"] for r in result["refused"]}
        for index, (case, _) in enumerate(array_items, start=len(good)):
            if case["expect"] != "stored":
                assert refused[index] == case["expect"], (case["name"], result)
        assert "server_time_ms" in result
        for case, item in alone:
            resp = await session.post(server.make_url("/v1/telemetry"), data=item,
                                      headers=_headers(devices, "V000001", item))
            answer = await resp.json()
            assert resp.status == 422 and answer["refused"][0]["reason"] == case["expect"], (case["name"], answer)
    await server.close()
    assert len(sink.points) == len(good) + len(stored_cases)  # every good report kept


async def test_https_refuses_forged_replayed_stale_unknown_and_oversized(devices: DeviceRegistry) -> None:
    sink = Sink()
    server, ingest = await _https_server(devices, sink)
    url = server.make_url("/v1/telemetry")
    body = b"[" + report("V000002", 1, int(time.time() * 1000)) + b"]"
    async with aiohttp.ClientSession() as session:
        async def post(headers: dict[str, str], data: bytes = body) -> tuple[int, dict[str, Any]]:
            resp = await session.post(url, data=data, headers=headers)
            return resp.status, await resp.json()

        status, answer = await post(_headers(devices, "V000002", body, secret=b"wrong-secret-0000"))
        assert (status, answer["error"]) == (401, "bad_signature")
        status, answer = await post(_headers(devices, "V000002", body, ts_ms=int(time.time() * 1000) - 600_000))
        assert (status, answer["error"]) == (401, "stale") and answer["server_time_ms"]
        status, answer = await post(_headers(devices, "V999999", body))
        assert (status, answer["error"]) == (401, "unknown_device")
        status, answer = await post({"Content-Type": "application/json"})
        assert (status, answer["error"]) == (400, "bad_request")
        headers = _headers(devices, "V000002", body, nonce="n-1")
        assert (await post(headers))[0] == 200
        status, answer = await post(headers)  # the same request again
        assert (status, answer["error"]) == (409, "replayed")
        big = b"[" + b",".join([report("V000002", 10 + i, int(time.time() * 1000)) for i in range(200)]) + b"]"
        status, answer = await post(_headers(devices, "V000002", big), big)
        assert status == 413 and answer["error"] == "too_large"
        # A device that was offline posts what it buffered: one request, many reports, no rate limit hit.
        now_ms = int(time.time() * 1000)
        buffered = b"[" + b",".join([report("V000002", 1000 + i, now_ms - 3_000_000 + i * 60_000)
                                     for i in range(45)]) + b"]"
        status, answer = await post(_headers(devices, "V000002", buffered), buffered)
        assert status == 200 and answer["accepted"] == 45 and not answer["refused"], answer
        # Another device's valid signature over a report that names V000002: refused per report.
        status, answer = await post(_headers(devices, "V000003", body))
        assert status == 422 and answer["refused"][0]["reason"] == "wrong_device"
    await server.close()
    assert len(sink.points) == 1 + 45
    for reason in ("bad_signature", "stale", "unknown_device", "bad_request", "replayed", "too_large", "wrong_device"):
        assert rejected(ingest.metrics, "https", reason) >= 1, reason


# -- MQTT: real broker, ACL, TLS, two workers ------------------------------------------------------

def _worker(broker: Mosquitto, influx: InfluxDB | None, tmp_path: Path, n: int, *, group: str = "cascade-ingest",
            https: bool = False) -> IngestWorker:
    settings = VehicleSettings(
        devices=str(broker.paths["devices"]),
        mqtt=MqttSettings(host="127.0.0.1", port=broker.tls_port, username="ingest", password=broker.ingest_password,
                          tls_ca=str(broker.ca), group=group),
        https=HttpsSettings(port=0) if https else None, metrics_port=0)
    config = None if influx is None else InfluxConfig(url=influx.url, database=influx.database,
                                                      spool_dir=str(tmp_path / "spool"), flush_interval_s=0.2)
    return IngestWorker(settings, config, worker=n, registry=CollectorRegistry())


def _device(broker: Mosquitto, device: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, username=device, password=broker.secret(device),
                          identifier=f"dev-{device}", protocol=aiomqtt.ProtocolVersion.V5)


async def _wait(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_two_workers_share_the_stream_store_each_report_once_and_keep_latest_by_device_time(
        mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    ids = mosquitto.device_ids()[:10]
    per_device = 12
    base = int(time.time() * 1000) - 120_000
    async with _worker(mosquitto, influxdb, tmp_path, 1) as w1, _worker(mosquitto, influxdb, tmp_path, 2) as w2:
        await asyncio.wait_for(asyncio.gather(w1.mqtt.connected.wait(), w2.mqtt.connected.wait()), 10)
        for device in ids:
            async with _device(mosquitto, device) as client:
                # Sent newest-first for half the reports: arrival order is not device-time order, and
                # every report is published twice (a QoS 1 redelivery, possibly to the other worker).
                order = list(range(per_device))
                order = order[per_device // 2:] + order[: per_device // 2][::-1]
                for seq in order:
                    payload = report(device, seq + 1, base + seq * 10_000, lat=39.90 + seq / 1000, soc=90 - seq)
                    for _ in range(2):
                        await client.publish(topic("bj", device), payload, qos=1)
        sent = len(ids) * per_device
        await _wait(lambda: w1.mqtt.received + w2.mqtt.received >= 2 * sent)
        assert w1.mqtt.received > 0 and w2.mqtt.received > 0  # the broker shares the stream
    rows = influxdb.query('SELECT count("sequence") FROM "vehicle" GROUP BY "vehicle"')
    assert {r["vehicle"]: r["count"] for r in rows} == {d: per_device for d in ids}  # each report once
    batteries = influxdb.query('SELECT count("soc_pct") FROM "vehicle_battery"')
    assert batteries[0]["count"] == sent
    latest = influxdb.query('SELECT last("latitude_deg") AS lat, last("sequence") AS seq FROM "vehicle" '
                            'GROUP BY "vehicle"')
    for row in latest:  # the latest by device time, whatever the arrival order and worker
        assert row["seq"] == per_device
        assert row["lat"] == pytest.approx(39.90 + (per_device - 1) / 1000)


async def test_broker_acl_keeps_a_device_to_its_own_topic_and_workers_refuse_the_wrong_fleet(
        mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    async with _worker(mosquitto, influxdb, tmp_path, 1) as worker:
        await asyncio.wait_for(worker.mqtt.connected.wait(), 10)
        async with _device(mosquitto, "V000003") as client:
            # Another device's topic: the broker's ACL drops the publish (MQTT 5 PUBACK "not authorized");
            # nothing reaches a worker (counted below: the worker receives only the two of its own topic).
            await client.publish(topic("bj", "V000004"), report("V000004", 1, now_ms), qos=1)
            await client.subscribe(topic("sh", "V000003", "reject"))
            await client.subscribe(topic("bj", "V000003", "reject"))
            await client.publish(topic("sh", "V000003"), report("V000003", 1, now_ms), qos=1)  # wrong fleet
            async with asyncio.timeout(10):
                async for message in client.messages:
                    event = json.loads(message.payload)
                    break
            assert event["reason"] == "wrong_topic" and event["server_time_ms"]
            await client.publish(topic("bj", "V000003"), report("V000003", 2, now_ms), qos=1)
            await _wait(lambda: worker.ingest.metrics.accepted.labels("mqtt")._value.get() >= 1)
        assert rejected(worker.ingest.metrics, "mqtt", "wrong_topic") == 1
        assert worker.mqtt.received == 2
    rows = influxdb.query('SELECT "sequence", "vehicle" FROM "vehicle"')
    assert [(r["vehicle"], r["sequence"]) for r in rows] == [("V000003", 2)]


async def test_plain_clients_cannot_skip_authentication_and_tls_verifies(mosquitto: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="anon", protocol=aiomqtt.ProtocolVersion.V5):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000001", password="not-the-secret",
                                  protocol=aiomqtt.ProtocolVersion.V5):
            pass
    with pytest.raises(aiomqtt.MqttError):  # the system trust store does not know the local CA
        async with aiomqtt.Client("127.0.0.1", mosquitto.tls_port, username="V000001",
                                  password=mosquitto.secret("V000001"), tls_context=ssl.create_default_context(),
                                  protocol=aiomqtt.ProtocolVersion.V5):
            pass
    async with aiomqtt.Client("127.0.0.1", mosquitto.tls_port, username="V000001", password=mosquitto.secret("V000001"),
                              tls_context=ssl.create_default_context(cafile=str(mosquitto.ca)),
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.publish(topic("bj", "V000001"), b"{}", qos=1)
