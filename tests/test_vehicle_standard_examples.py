"""The vehicle wire format against the delivery e-bike standard's own examples and ranges (Annex A,
tables A.1-A.4) and the swap-vehicle standard's Table 1: data written by the standard, not by us."""

from __future__ import annotations

import json

import pytest

from collectors.vehicles.wire import decode, to_reading
from core.model import BatteryState, Chemistry, VehicleState
from exporters.influx.schema import vehicle_to_lines

# Annex A's example column, item by item (A.2: 充电中, 可用, 116.544608, 39.924109, 25 km/h, 10,000 km;
# A.3: 哈喽换电, MDFFFHF05AMM1486, 三元锂, 46.8 V, 12.0 Ah, 5 A, 16 A, 41.0 V; A.4: 4.25 V, 3.00 V,
# 50.2 °C, 0.1 °C, 充电, 350 次). Table 1 adds altitude.
ANNEX_A = {
    "v": 1, "vehicle": "DE1-0001", "seq": 1, "ts": 1_700_000_000_000, "model": "雅迪 DE1",
    "state": "charging", "power": True,
    "pos": {"valid": True, "lon": 116.544608, "lat": 39.924109, "alt": 38.0},
    "speed_kmh": 25, "odometer_km": 10000,
    "battery": {"maker": "哈喽换电", "id": "MDFFFHF05AMM1486", "chemistry": "NMC", "nominal_v": 46.8,
                "nominal_ah": 12.0, "max_charge_a": 5, "max_discharge_a": 16, "undervoltage_v": 41.0,
                "cell_max_v": 4.25, "cell_min_v": 3.00, "cell_max_c": 50.2, "cell_min_c": 0.1,
                "state": "charging", "cycles": 350},
}


def test_annex_a_examples_decode_to_the_standards_values() -> None:
    reading, problems = to_reading(decode(json.dumps(ANNEX_A, ensure_ascii=False).encode()), fleet="bj",
                                   received_ns=0)
    assert problems == []
    assert (reading.state, reading.position_valid) == (VehicleState.CHARGING, True)
    assert (reading.longitude_deg, reading.latitude_deg, reading.altitude_m) == (116.544608, 39.924109, 38.0)
    assert (reading.speed_kmh, reading.odometer_km, reading.model) == (25, 10000, "雅迪 DE1")
    b = reading.battery
    assert b is not None
    assert (b.battery_maker, b.battery_id, b.chemistry) == ("哈喽换电", "MDFFFHF05AMM1486", Chemistry.NMC)
    assert (b.nominal_voltage_v, b.nominal_capacity_ah, b.max_charge_current_a, b.max_discharge_current_a,
            b.undervoltage_protection_v) == (46.8, 12.0, 5, 16, 41.0)
    assert (b.cell_voltage_max_v, b.cell_voltage_min_v, b.cell_temperature_max_c, b.cell_temperature_min_c) == (
        4.25, 3.00, 50.2, 0.1)
    assert (b.battery_state, b.charge_count) == (BatteryState.CHARGING, 350)
    vehicle, battery = vehicle_to_lines(reading)
    assert 'battery_maker="哈喽换电"' in battery and 'battery_id="MDFFFHF05AMM1486"' in battery
    assert "longitude_deg=116.544608" in vehicle and "latitude_deg=39.924109" in vehicle


# A.4's ranges: SOC 0-100 %, temperature -40-80 °C, voltage 0-60 V, charge current 0-20 A.
@pytest.mark.parametrize("field, value", [
    ("soc_pct", 0), ("soc_pct", 100), ("temperature_c", -40), ("temperature_c", 80), ("voltage_v", 0),
    ("voltage_v", 60), ("current_a", 0), ("current_a", 20),
])
def test_every_value_at_an_a4_range_end_is_kept_as_sent(field: str, value: float) -> None:
    msg = {"v": 1, "vehicle": "V1", "seq": 1, "ts": 1, "battery": {"id": "B1", field: value}}
    reading, problems = to_reading(decode(json.dumps(msg).encode()), fleet="bj", received_ns=0)
    assert problems == [] and reading.battery is not None and reading.battery.over_range == ()
    names = {"soc_pct": "soc_pct", "temperature_c": "temperature_c", "voltage_v": "voltage_v",
             "current_a": "charge_current_a"}
    assert getattr(reading.battery, names[field]) == value


@pytest.mark.parametrize("field, value, kept, dropped", [
    ("soc_pct", 101, None, True),           # not a state of charge
    ("voltage_v", 61.5, 60.0, False),        # an over-charged pack: the worst case, kept at the limit
    ("temperature_c", 250, 200.0, False),    # a pack burning past its sensor: kept at the limit
])
def test_past_an_a4_range_end(field: str, value: float, kept: float | None, dropped: bool) -> None:
    msg = {"v": 1, "vehicle": "V1", "seq": 1, "ts": 1, "battery": {"id": "B1", field: value}}
    reading, problems = to_reading(decode(json.dumps(msg).encode()), fleet="bj", received_ns=0)
    assert reading.battery is not None and getattr(reading.battery, field) == kept
    assert bool(problems) is dropped and (field in reading.battery.over_range) is (not dropped)
