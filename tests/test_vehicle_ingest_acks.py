"""MQTT acknowledgements after handling (real Mosquitto): a worker that dies while handling its messages
has acknowledged none of them, and the broker hands them out again when the worker's session resumes;
a worker stopped on purpose leaves its group without a backlog (nothing queues for it)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from collectors.vehicles.ingest import VehicleIngest
from collectors.vehicles.mqtt import MqttIngest, topic
from collectors.vehicles.settings import MqttSettings
from collectors.vehicles.trust import DeviceRegistry, Gate
from tests.fixtures.mosquitto import Mosquitto
from tests.test_vehicle_ingest import _device, _wait, report

ROOT = Path(__file__).resolve().parents[1]

# A worker process that dies (os._exit: no clean-up, no DISCONNECT, no unsubscription): while storing
# its first report ("storing"), or a second after it stored 30 ("after").
_CRASHING_WORKER = """
import asyncio, os, sys
from collectors.vehicles.ingest import VehicleIngest
from collectors.vehicles.mqtt import MqttIngest
from collectors.vehicles.settings import MqttSettings
from collectors.vehicles.trust import DeviceRegistry, Gate

async def main(port, password, devices, when):
    stored = []
    ingest = VehicleIngest(DeviceRegistry.load(devices), sink=None, gate=Gate(rate_per_s=1e9, burst=1e9),
                           on_reading=lambda reading: os._exit(3) if when == "storing" else stored.append(1))
    mqtt = MqttIngest(MqttSettings(port=int(port), password=password, group="g"), ingest,
                      client_id="cascade-ingest-1")
    task = asyncio.create_task(mqtt.run())
    await mqtt.connected.wait()
    print("subscribed", flush=True)
    while len(stored) < 30:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    os._exit(4)

asyncio.run(main(*sys.argv[1:]))
"""


class _Keep:
    def __init__(self) -> None:
        self.points: list[Any] = []

    def submit(self, points: Any) -> None:
        self.points.extend(points)


def _ingest(broker: Mosquitto, sink: _Keep) -> VehicleIngest:
    return VehicleIngest(DeviceRegistry.load(broker.paths["devices"]), sink=sink,
                         gate=Gate(rate_per_s=1e9, burst=1e9))


def _mqtt(broker: Mosquitto, ingest: VehicleIngest, client_id: str) -> MqttIngest:
    return MqttIngest(MqttSettings(port=broker.port, password=broker.ingest_password, group="g"), ingest,
                      client_id=client_id)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _crash(broker: Mosquitto, when: str) -> int:
    """Run the crashing worker, publish 30 reports of V000001 to it, return its exit status."""
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_WORKER, str(broker.port), broker.ingest_password,
                              str(broker.paths["devices"]), when], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.strip() == "subscribed"
        now_ms = int(time.time() * 1000)
        async with _device(broker, "V000001") as device:
            for seq in range(1, 31):
                await device.publish(topic("bj", "V000001"), report("V000001", seq, now_ms + seq), qos=1)
        return await asyncio.to_thread(child.wait, 20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_worker_that_dies_while_handling_acknowledged_nothing_and_gets_it_all_again(
        mosquitto: Mosquitto) -> None:
    assert await _crash(mosquitto, "storing") == 3  # it died storing a report it had received
    sink = _Keep()
    restarted = _mqtt(mosquitto, _ingest(mosquitto, sink), "cascade-ingest-1")  # the same worker, back
    task = asyncio.create_task(restarted.run())
    try:
        await _wait(lambda: len({p.sequence for p in sink.points}) == 30)
    finally:
        await _stop(task)
    assert sorted({p.sequence for p in sink.points}) == list(range(1, 31))  # every report, the crashed one too


async def test_what_a_worker_handled_is_acknowledged_and_not_sent_again_after_it_dies(mosquitto: Mosquitto) -> None:
    assert await _crash(mosquitto, "after") == 4  # died a second after it stored all 30, still subscribed
    sink = _Keep()
    restarted = _mqtt(mosquitto, _ingest(mosquitto, sink), "cascade-ingest-1")
    task = asyncio.create_task(restarted.run())
    try:
        await asyncio.wait_for(restarted.connected.wait(), 10)
        await asyncio.sleep(1.0)
        assert restarted.received == 0  # the broker had every acknowledgement: nothing comes again
        async with _device(mosquitto, "V000001") as device:  # the session and its subscription live on
            await device.publish(topic("bj", "V000001"), report("V000001", 31, int(time.time() * 1000)), qos=1)
        await _wait(lambda: [p.sequence for p in sink.points] == [31])
    finally:
        await _stop(task)


async def test_a_worker_stopped_on_purpose_leaves_nothing_queued_for_itself(mosquitto: Mosquitto) -> None:
    sink1, sink2 = _Keep(), _Keep()
    w1 = _mqtt(mosquitto, _ingest(mosquitto, sink1), "cascade-ingest-1")
    w2 = _mqtt(mosquitto, _ingest(mosquitto, sink2), "cascade-ingest-2")
    t1, t2 = asyncio.create_task(w1.run()), asyncio.create_task(w2.run())
    try:
        await asyncio.wait_for(asyncio.gather(w1.connected.wait(), w2.connected.wait()), 10)
        await _stop(t1)  # unsubscribes, finishes what it holds, disconnects
        assert not w1.connected.is_set()
        now_ms = int(time.time() * 1000)
        async with _device(mosquitto, "V000002") as device:
            for seq in range(1, 21):
                await device.publish(topic("bj", "V000002"), report("V000002", seq, now_ms + seq), qos=1)
        # With its subscription left in its session, the broker would queue every other report for it.
        await _wait(lambda: len(sink2.points) == 20)
        assert w2.received == 20 and w2.batches >= 1 and not sink1.points
    finally:
        await _stop(t2)
        if not t1.done():
            await _stop(t1)


async def test_the_worker_reconnects_and_subscribes_again_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    sink = _Keep()
    worker = _mqtt(mosquitto, _ingest(mosquitto, sink), "cascade-ingest-1")
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.connected.wait(), 10)
        now_ms = int(time.time() * 1000)
        async with _device(mosquitto, "V000003") as device:
            await device.publish(topic("bj", "V000003"), report("V000003", 1, now_ms), qos=1)
        await _wait(lambda: len(sink.points) == 1)
        mosquitto.stop()  # no persistence: the broker forgets every session
        await _wait(lambda: not worker.connected.is_set())
        mosquitto.start()
        await asyncio.wait_for(worker.connected.wait(), 20)  # paho reconnected; the subscription is renewed
        async with _device(mosquitto, "V000003") as device:
            await device.publish(topic("bj", "V000003"), report("V000003", 2, now_ms + 1), qos=1)
        await _wait(lambda: len(sink.points) == 2)
    finally:
        await _stop(task)
    assert [p.sequence for p in sink.points] == [1, 2]
