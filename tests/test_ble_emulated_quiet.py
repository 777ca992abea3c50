"""The emulated packs `make run` reads are healthy: the whole catalogue stays quiet on them (a demo that
raises alarms on healthy packs teaches operators to ignore alarms)."""

from __future__ import annotations

from alerting.engine import Engine
from alerting.rules import load_rules
from collectors.ble import wire
from collectors.ble.emulator import make_radio
from tests.fixtures.clock import ManualClock
from tests.test_ble_gateway import Reports, _gateway, _running, _until


async def test_the_emulated_packs_raise_nothing_over_ten_minutes() -> None:
    radio = make_radio(8, latency_s=0.0)
    sink = Reports()
    async with _running(_gateway(radio, sink, max_connections=3, chemistry="NMC")):
        await _until(lambda: len({p.address for p in sink.packs()}) == 8, timeout_s=10)
    clock = ManualClock()
    engine = Engine(load_rules(), clock=clock)
    raised = []
    for _ in range(60):  # ten minutes of reports every 10 s
        for report in sink.reports:
            reading = wire.to_reading(report, fleet="bj")
            reading.timestamp_ns = int(clock.now * 1e9)
            raised += [(t.rule, t.key.slot, t.to_level) for t in engine.evaluate(reading)]
        clock.advance(10)
    assert raised == []
