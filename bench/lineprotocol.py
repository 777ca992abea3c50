"""Line-protocol encoding throughput: influxdb_client Point vs encode_line vs LineEncoder, same run.

Run: ``python -m bench.lineprotocol [--seconds 1.0]``. The point is a typical battery-slot sample:
4 tags, 30 fields (16 cell voltages, 8 temperatures, SoC/SoH/cycles/current/charging/fault), with
values scaled from Modbus registers (mV, 0.1 degC), as the collectors produce them.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from influxdb_client import Point, WritePrecision

from exporters.influx.lineprotocol import LineEncoder, encode_line

__all__ = ["main", "measure", "sample_points"]

MEASUREMENT = "battery_slot"
TAG_KEYS = ("cabinet", "slot", "site", "pack_sn")


def sample_points(count: int, seed: int = 7) -> list[tuple[dict[str, str], dict[str, object], int]]:
    """``count`` varied battery-slot points (tags, fields, timestamp_ns) over 20 cabinets x 12 slots."""
    rng = random.Random(seed)
    points = []
    for n in range(count):
        cabinet = n % 20
        tags = {"cabinet": f"cab-{cabinet:04d}", "slot": f"{n % 12:02d}", "site": "shenzhen-futian",
                "pack_sn": f"BP2023A{cabinet * 12 + n % 12:05d}"}
        fields: dict[str, object] = {f"cell_v_{i:02d}": rng.randint(3000, 4200) / 1000 for i in range(16)}
        fields.update({f"temp_{i}": rng.randint(200, 450) / 10 for i in range(8)})
        fields.update({"soc": rng.randint(0, 100), "soh": rng.randint(70, 100), "cycle_count": rng.randint(0, 3000),
                       "current_a": rng.randint(-3000, 3000) / 100, "charging": rng.random() < 0.5,
                       "fault_code": 0})
        points.append((tags, fields, 1_700_000_000_000_000_000 + n * 1_000_000_000))
    return points


def _with_point(tags: dict, fields: dict, ts: int, measurement: str = MEASUREMENT) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return point.time(ts, WritePrecision.NS).to_line_protocol()


def measure(encoders: dict[str, Callable[[dict, dict, int], str]], points: list, seconds: float,
            rounds: int = 7) -> dict[str, float]:
    """Best points/s of each encoder over ``rounds`` interleaved passes through ``points``.

    Interleaving and best-of make the ratios robust against a noisy (shared, throttled) machine.
    """
    best = dict.fromkeys(encoders, 0.0)
    for _ in range(rounds):
        for name, encode in encoders.items():
            done = 0
            start = time.perf_counter()
            deadline = start + seconds / rounds
            while True:
                for tags, fields, ts in points:
                    encode(tags, fields, ts)
                done += len(points)
                now = time.perf_counter()
                if now >= deadline:
                    break
            best[name] = max(best[name], done / (now - start))
    return best


def schema_points(count: int, seed: int = 11) -> list[tuple[dict[str, str], dict[str, object], int]]:
    """``count`` points of Cascade's own ``slot`` measurement, as the Modbus collector decodes them."""
    from core.model import SlotReading
    from exporters.influx import schema

    rng = random.Random(seed)
    points = []
    for n in range(count):
        slot = SlotReading(
            slot=n % 12 + 1, battery_maker=rng.choice(["CATL", "EVE", "Lishen"]),
            battery_id=f"LF48-{rng.randrange(10**8):08d}", chemistry=rng.randint(1, 4),
            nominal_voltage_v=48.0, nominal_capacity_ah=rng.choice([20.0, 24.0, 30.0]),
            max_charge_current_a=rng.randint(60, 150) / 10, max_discharge_current_a=rng.randint(400, 720) / 10,
            undervoltage_protection_v=37.5, soc_pct=float(rng.randint(0, 100)),
            temperature_c=rng.randint(200, 450) / 10, voltage_v=rng.randint(440, 548) / 10,
            charge_current_a=rng.randint(0, 150) / 10, soh_pct=rng.randint(700, 1000) / 10,
            charge_start_time_s=1_700_000_000 + n, expected_end_time_s=1_700_003_600 + n,
            cell_voltage_max_v=rng.randint(3300, 3650) / 1000, cell_voltage_min_v=rng.randint(3200, 3400) / 1000,
            cell_temperature_max_c=rng.randint(200, 450) / 10, cell_temperature_min_c=rng.randint(180, 300) / 10,
            battery_state=rng.randint(1, 2), charge_count=rng.randint(20, 1500),
            insulation_resistance_kohm=float(rng.randint(8000, 30000)), charger_protection=0, bms_protection=0,
            surface_temperature_c=rng.randint(200, 400) / 10, h2_ppm=rng.randint(0, 20) / 10,
            voc_ppm=rng.randint(0, 10) / 10, module_pressure_kpa=rng.randint(1000, 1030) / 10,
            valve_acoustic_events=0, output_enabled=True)
        fields = {name: getattr(slot, name) for name in schema._SLOT_FIELDS}
        fields["charger_protection_text"] = ""
        fields["bms_protection_text"] = ""
        tags = {"site": f"site-{n % 2 + 1:02d}", "cabinet": f"C{n % 20 + 1:04d}", "slot": str(slot.slot)}
        points.append((tags, fields, 1_700_000_000_000_000_000 + n * 1_000_000_000))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per encoder (default 2.0)")
    args = parser.parse_args(argv)
    points = sample_points(1000)
    encoder = LineEncoder(MEASUREMENT, TAG_KEYS, points[0][1].keys())
    for tags, fields, ts in points:  # the three must agree before their speed means anything
        if not _with_point(tags, fields, ts) == encode_line(MEASUREMENT, tags, fields, ts) \
                == encoder.encode(tags, fields, ts):
            raise SystemExit(f"encoders disagree on {tags} {fields}")
    rates = measure({
        "Point.to_line_protocol": _with_point,
        "encode_line": lambda t, f, ts: encode_line(MEASUREMENT, t, f, ts),
        "LineEncoder.encode": encoder.encode,
    }, points, args.seconds)
    base = rates["Point.to_line_protocol"]
    print(f"30-field battery-slot point, {len(points)} distinct points, best of 7 interleaved rounds, "
          f"{args.seconds:.1f}s per encoder")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:12,.0f} points/s  {1e6 / rate:7.2f} us/point  {rate / base:5.2f}x Point")

    # Cascade's own slot point (numbers, booleans and strings), through the encoder the pipeline uses.
    from exporters.influx import schema
    points = schema_points(1000)
    slot_encoder = schema._SLOT_ENCODER
    def with_point(tags: dict, fields: dict, ts: int) -> str:
        return _with_point(tags, fields, ts, schema.SLOT_MEASUREMENT)

    for tags, fields, ts in points:
        if with_point(tags, fields, ts) != slot_encoder.encode(tags, fields, ts):
            raise SystemExit(f"schema encoder disagrees with Point on {tags} {fields}")
    rates = measure({"Point.to_line_protocol": with_point, "schema slot encoder": slot_encoder.encode},
                    points, args.seconds)
    base = rates["Point.to_line_protocol"]
    print(f"Cascade `slot` point ({len(points[0][1])} fields incl. strings), {len(points)} distinct points")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:12,.0f} points/s  {1e6 / rate:7.2f} us/point  {rate / base:5.2f}x Point")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
