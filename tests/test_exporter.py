"""Prometheus fleet gauges: a silent sensor's last value must not linger as if it were current."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from core.model import CabinetReading, SlotReading
from exporters.prometheus import PipelineMetrics


def test_a_sensor_that_goes_silent_drops_its_series() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    labels = {"site": "s1", "cabinet": "C1"}
    metrics.observe(CabinetReading("C1", "s1", "m", 1, smoke_detected=True, cabinet_temperature_c=30.0,
                                   slots=[SlotReading(slot=1, temperature_c=80.0)]), 10, [])
    assert registry.get_sample_value("cascade_cabinet_smoke_detected", labels) == 1
    assert registry.get_sample_value("cascade_cabinet_battery_temperature_max_celsius", labels) == 80
    metrics.observe(CabinetReading("C1", "s1", "m", 2, cabinet_temperature_c=31.0,
                                   slots=[SlotReading(slot=1)]), 10, ["temperature_c"])
    assert registry.get_sample_value("cascade_cabinet_smoke_detected", labels) is None
    assert registry.get_sample_value("cascade_cabinet_battery_temperature_max_celsius", labels) is None
    assert registry.get_sample_value("cascade_cabinet_temperature_celsius", labels) == 31
    assert registry.get_sample_value("cascade_decode_errors_total", {"field": "temperature_c"}) == 1
