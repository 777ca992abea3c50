"""Protective action over BLE, end to end over a real Mosquitto: an emulated gateway publishes its packs,
`cascade run`'s watch feeds them to the warning engine, a hot pack raises level 3, the rule's cut-off goes
through the gateway commander as a MOSFET-off command on the gateway's own `cmd` topic, the gateway switches
the pack's charge MOSFET off with the BMS's command, reads it back and answers; the platform records the
result like a cabinet cut-off. A stuck MOSFET (acknowledged, reads back on) is a failed action: alerted and
retried. A gateway cannot read another gateway's commands nor answer for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.service import ACTION_FAILED, AlertService
from cascade.app import alert_service_for, gateway_commander_for
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from cascade.vehicles import provision
from collectors.ble import wire
from collectors.ble.commands import (
    CommandListener,
    GatewayCommander,
    MosfetAck,
    MosfetCommand,
    MosfetState,
    cmd_topic,
    decode_command,
    encode,
    result_topic,
)
from collectors.ble.emulator import EmulatedClient, EmulatedPack, EmulatedScanner, make_radio
from collectors.ble.gateway import Gateway, GatewaySettings
from collectors.ble.uplink import DiskBuffer, Uplink, UplinkSettings
from collectors.vehicles.settings import MqttSettings, VehicleSettings
from collectors.vehicles.trust import DeviceRegistry
from core.events import CommandResult
from tests.fixtures.clock import ManualClock
from tests.fixtures.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(90)

GATEWAY, OTHER = "G000001", "G000002"
RULE = "over_temperature"  # level 3 at 70 °C: slot_cutoff


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The mosquitto fixture's broker with two gateways provisioned beside its vehicles (own users, the ACL
    `cascade devices provision` writes)."""
    broker = Mosquitto(tmp_path / "mq")
    provision(broker.root / "devices", count=2, fleet="bj", prefix="G", ingest_password=broker.ingest_password)
    broker.devices = DeviceRegistry.load(broker.paths["devices"])
    broker.start()
    yield broker
    broker.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _tasks(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Platform:
    """`cascade run` as cascade.app wires it: the watch, the engine (one rule, a manual clock that moves
    30 s per gateway reading), the alert service and the gateway commander; command points kept."""

    def __init__(self, pipeline: Pipeline, service: AlertService, commander: GatewayCommander,
                 points: list[Any]) -> None:
        self.pipeline, self.service, self.commander, self.points = pipeline, service, commander, points

    def results(self) -> list[CommandResult]:
        return [p for p in self.points if isinstance(p, CommandResult)]


@contextlib.asynccontextmanager
async def _platform(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[Platform]:
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port, username="ingest", password=broker.ingest_password)
    vehicles = VehicleSettings(devices=str(broker.paths["devices"]), mqtt=mqtt, metrics_port=0, rate_per_s=50,
                               burst=100)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    clock = ManualClock()
    engine = Engine(load_rules().only([RULE]), clock=clock)
    points: list[Any] = []
    async with Pipeline(config, registry=CollectorRegistry()) as pipeline:
        pipeline.submit = points.extend  # type: ignore[method-assign]  # the sink: alert and command points
        commander = gateway_commander_for(config, pipeline, timeout_s=4.0, resend_s=1.0)
        assert commander is not None
        service = alert_service_for(pipeline, engine, alertmanager_url=None,
                                    policy=ActionPolicy(perform=frozenset({"slot_cutoff", "stop_charging"}),
                                                        retry_s=0.5))
        pipeline.subscribe(lambda r: clock.advance(30) and None)  # after the engine: the next reading is later
        async with service, commander:
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(asyncio.gather(watch.mqtt.connected.wait(), commander.connected.wait()), 10)
            yield Platform(pipeline, service, commander, points)
            await service.stop_actions()


@contextlib.asynccontextmanager
async def _gateway(broker: Mosquitto, tmp_path: Path, packs: int = 2) -> AsyncIterator[tuple[Gateway, list[EmulatedPack],
                                                                                          CommandListener]]:
    """An emulated gateway (G000001) with its uplink and its downlink, every pack on its MOSFET allow-list."""
    radio = make_radio(packs, latency_s=0.001)
    emulated = list(radio.packs.values())
    settings = GatewaySettings(gateway_id=GATEWAY, fleet="bj", interval_s=0.2, max_connections=2, scan_timeout_s=0.01,
                               request_timeout_s=0.5, batch_s=0.2, rescan_s=3600.0, connect_attempts=1,
                               mosfet_allow=frozenset(p.address for p in emulated),
                               audit_file=str(tmp_path / "gw" / "mosfet-audit.jsonl"),
                               state_file=str(tmp_path / "gw" / "state.json"))
    uplink = Uplink(UplinkSettings(host="127.0.0.1", port=broker.port, username=GATEWAY,
                                   password=broker.secret(GATEWAY), topic=wire.topic("bj", GATEWAY),
                                   backoff_base_s=0.05, backoff_cap_s=0.3, publish_timeout_s=2.0),
                    DiskBuffer(tmp_path / "gw" / "buffer", max_bytes=1 << 20), seed=1)
    gateway = Gateway(settings, uplink, scanner_backend=EmulatedScanner, client_backend=EmulatedClient,
                      scanner_kwargs={"radio": radio}, seed=1)
    listener = CommandListener(gateway, host="127.0.0.1", port=broker.port, username=GATEWAY,
                               password=broker.secret(GATEWAY))
    async with _tasks(gateway.run(), uplink.run(), listener.run()):
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield gateway, emulated, listener
    assert radio.sessions_open() == []


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "gw" / "mosfet-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_hot_pack_raises_level_3_and_its_charge_mosfet_is_switched_off_and_read_back(
        broker: Mosquitto, tmp_path: Path) -> None:
    async with _platform(broker, tmp_path) as platform, _gateway(broker, tmp_path) as (gateway, packs, _):
        hot = packs[0]
        await _until(lambda: platform.commander.slot_count(GATEWAY) == 2)
        slot = next(p.slot for a, p in gateway.packs.items() if a == hot.address)
        hot.state.temperatures_c = [75.0, 74.0]  # past 70 °C: level 3, slot_cutoff
        await _until(lambda: any(r.ok for r in platform.results()))
        active = [(a.key.rule, a.key.cabinet, a.key.slot, a.level) for a in platform.service.engine.state.active()]
        assert (RULE, GATEWAY, slot, 3) in active
    [record] = [r for r in platform.service.actions.recent if r.cabinet == GATEWAY]
    assert (record.slot, record.command, record.value, record.result, record.readback) == (
        slot, "slot_output", 0, "ok", 0)
    assert record.actor == f"rule:{RULE}@level3" and record.action == "slot_cutoff"
    [point] = platform.results()  # the `command` point, as for a cabinet's cut-off
    assert (point.cabinet_id, point.site, point.slot, point.ok, point.readback, point.actor) == (
        GATEWAY, "bj", slot, True, 0, f"rule:{RULE}@level3")
    assert not platform.service.failed
    # The pack itself: its charge MOSFET off, discharge left on, by the BMS's own command (JBD 0xE1).
    assert (hot.state.mosfet_charge, hot.state.mosfet_discharge) == (False, True)
    assert hot.mosfet_writes == [0x01] and packs[1].mosfet_writes == []
    [entry] = _audit(tmp_path)  # the gateway's own audit: who, what, the states before and after
    assert (entry["address"], entry["result"], entry["actor"]) == (hot.address, "ok", f"rule:{RULE}@level3")
    assert entry["before"] == {"charge": True, "discharge": True}
    assert entry["after"] == {"charge": False, "discharge": True}


async def test_a_stuck_mosfet_is_a_failed_action_alerted_and_retried_until_it_reads_back_off(
        broker: Mosquitto, tmp_path: Path) -> None:
    async with _platform(broker, tmp_path) as platform, _gateway(broker, tmp_path) as (gateway, packs, _):
        stuck = packs[1]  # the Daly pack (0xDA): acknowledges the write, its MOSFET stays on
        stuck.stuck_mosfet = True
        await _until(lambda: platform.commander.slot_count(GATEWAY) == 2)
        slot = next(p.slot for a, p in gateway.packs.items() if a == stuck.address)
        stuck.state.temperatures_c = [78.0, 76.0]
        key = (ACTION_FAILED, GATEWAY, slot)
        await _until(lambda: any((k.rule, k.cabinet, k.slot) == key for k in platform.service.failed))
        failed = next(iter(platform.service.failed.values()))
        assert "read-back shows the MOSFET on" in failed.last_error and "gateway answered failed" in failed.last_error
        alerts = {a["labels"]["alertname"]: a for a in platform.service.active_alerts()}
        alert = alerts[ACTION_FAILED]  # alerted like a cabinet whose relay did not open: level 3, critical
        assert (alert["level"], alert["labels"]["cabinet"], alert["labels"]["slot"]) == (3, GATEWAY, str(slot))
        assert alert["labels"]["protective_action"] == "slot_cutoff"
        await _until(lambda: len(stuck.mosfet_writes) >= 3)  # retried: the same command again, new ids
        assert set(stuck.mosfet_writes) == {(0xDA, 0)}  # only ever "charge off"
        assert stuck.state.mosfet_charge is True
        # The MOSFET frees itself (or is replaced): the next retry reads it back off and the alert ends.
        stuck.stuck_mosfet = False
        await _until(lambda: not platform.service.failed)
    results = [r for r in platform.service.actions.recent if r.cabinet == GATEWAY]
    assert [r.result for r in results][:2] == ["failed", "failed"] and results[-1].result == "ok"
    assert all(r.readback == 1 for r in results[:-1]) and results[-1].readback == 0
    audit = _audit(tmp_path)
    assert [e["result"] for e in audit][:2] == ["failed", "failed"] and audit[-1]["result"] == "ok"
    assert all(e["after"] == {"charge": True, "discharge": True} for e in audit[:-1])
    assert stuck.state.mosfet_charge is False


async def test_a_gateway_cannot_read_another_gateways_commands_nor_answer_for_it(broker: Mosquitto) -> None:
    now_ms = int(time.time() * 1000)
    command = MosfetCommand(id="m-test", gateway=GATEWAY, slot=1, actor="rule:over_temperature@level3",
                            issued_ms=now_ms, expires_ms=now_ms + 60_000)
    got: dict[str, list[bytes]] = {GATEWAY: [], OTHER: [], "ingest": []}

    async def listen(user: str, password: str, topics: list[str], ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password,
                                  identifier=f"test-{user}", protocol=aiomqtt.ProtocolVersion.V5) as client:
            for where in topics:
                await client.subscribe(where, qos=1)
            ready.set()
            async for message in client.messages:
                got[user].append(bytes(message.payload))  # type: ignore[arg-type]

    ready = [asyncio.Event() for _ in range(3)]
    async with _tasks(listen(GATEWAY, broker.secret(GATEWAY), [cmd_topic("bj", GATEWAY)], ready[0]),
                      listen(OTHER, broker.secret(OTHER), [cmd_topic("bj", GATEWAY), "cascade/v1/+/+/cmd"], ready[1]),
                      listen("ingest", broker.ingest_password, ["cascade/v1/+/+/result"], ready[2])):
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        async with aiomqtt.Client("127.0.0.1", broker.port, username="ingest", password=broker.ingest_password,
                                  protocol=aiomqtt.ProtocolVersion.V5) as platform:
            await platform.publish(cmd_topic("bj", GATEWAY), encode(command), qos=1)
        forged = MosfetAck(id="m-test", gateway=GATEWAY, slot=1, result="ok", ts=now_ms,
                           after=MosfetState(charge=False, discharge=True))
        async with aiomqtt.Client("127.0.0.1", broker.port, username=OTHER, password=broker.secret(OTHER),
                                  protocol=aiomqtt.ProtocolVersion.V5) as other:
            await other.publish(result_topic("bj", GATEWAY), encode(forged), qos=1)  # another's answer
            await other.publish(result_topic("bj", OTHER), encode(forged), qos=1)  # its own topic, G1's id
        await _until(lambda: len(got[GATEWAY]) == 1 and len(got["ingest"]) == 1, 5)
        await asyncio.sleep(0.5)  # time for anything the broker wrongly let through
    assert decode_command(got[GATEWAY][0]) == command  # the addressee reads its command
    assert got[OTHER] == []  # the other gateway reads nothing of it, by name or by wildcard
    assert len(got["ingest"]) == 1  # its answer under the other gateway's name never got through
    # ... and the one it may publish (its own topic) does not pass for G000001's: the topic names the sender.
    commander = GatewayCommander(host="127.0.0.1", port=broker.port)
    loop = asyncio.get_running_loop()
    from collectors.ble.commands import _Pending  # the commander's waiting command, as command() leaves it

    pending = _Pending(command, loop.create_future())
    commander._pending[command.id] = pending
    commander._received(result_topic("bj", OTHER), got["ingest"][0])
    assert not pending.answered.done()
    commander._received(result_topic("bj", GATEWAY), encode(forged))
    assert pending.answered.done()


async def test_the_commander_serves_only_gateways_it_heard_and_only_switches_off() -> None:
    from core.model import CabinetReading, SlotReading
    from core.ports import Commander, UnknownDevice

    commander = GatewayCommander(host="127.0.0.1", port=1)  # never connected: nothing here is sent
    assert isinstance(commander, Commander)
    commander.observe(CabinetReading(cabinet_id="C01", site="bj", model="volta-s8", timestamp_ns=1,
                                     slots=[SlotReading(slot=1)]))
    commander.observe(CabinetReading(cabinet_id=GATEWAY, site="bj", model="ble-gateway", timestamp_ns=1,
                                     slots=[SlotReading(slot=1, battery_id="C0D63C000001"),
                                            SlotReading(slot=3, battery_id="C0D63C000003")]))
    assert (commander.slot_count("C01"), commander.slot_count(GATEWAY)) == (None, 3)  # a cabinet is not ours
    with pytest.raises(UnknownDevice):
        await commander.command("G000009", "slot_output", slot=1, value=0, actor="rule:x@level3")
    on = await commander.command(GATEWAY, "slot_output", slot=1, value=1, actor="user:alice")
    assert not on.ok and "only slot_output=0" in on.error and on.site == "bj"  # never switched on remotely
    reset = await commander.command(GATEWAY, "fault_reset", slot=None, value=1, actor="user:alice")
    assert not reset.ok and "only slot_output=0" in reset.error
    empty = await commander.command(GATEWAY, "slot_output", slot=2, value=0, actor="rule:x@level3")
    assert not empty.ok and "no pack at slot 2" in empty.error
