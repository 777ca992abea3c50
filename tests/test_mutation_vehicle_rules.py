"""The shipped vehicle-scope rules (alerting/catalogue.yaml, V-5.1 ... V-5.10, V-4.6) through the engine at
their boundaries: wheel motion at 3 km/h while armed, the fence at 1.2 R, the reminder SOC, the discharge
protection voltage by chemistry (38.4 V Li-ion, 30 V Na-ion), 0.25 V per cell of chemistry mismatch, 30 s
of clock skew and 3 and 15 report intervals; their `for`, hysteresis and clear delays on the steady
clock; what a vehicle alert names and asks for. The numbers are written here, not read from the
catalogue. Written to kill the mutants `make mutate` found alive in the engine's vehicle path."""

from __future__ import annotations

import pytest

from alerting.engine import Engine
from alerting.rules import load_rules
from collectors.vehicles.watch import as_engine_reading
from core.model import CabinetReading, Chemistry, SlotReading, VehicleProfile, VehicleReading
from tests.fixtures.clock import ManualClock

T0 = 1_764_990_000.0
NMC_48V = {"chemistry": int(Chemistry.NMC), "nominal_voltage_v": 48.0}
NA_48V = {"chemistry": int(Chemistry.NA_ION), "nominal_voltage_v": 48.0}
DRIVING = {"charge_current_a": -6.0}


class Vehicle:
    """Vehicle bj/V000001 reporting to an engine with some shipped rules; the steady clock moves only
    when the test says so (reports of the same moment otherwise)."""

    def __init__(self, *rule_ids: str, language: str = "en") -> None:
        self.clock = ManualClock(T0)
        self.engine = Engine(load_rules().only(list(rule_ids)), clock=self.clock, language=language)

    def report(self, *, after: float = 0.0, battery: dict | None = None, **values) -> list[tuple]:
        """(rule, kind, from, to, value) of the transitions of one report sent ``after`` seconds later."""
        return [(t.rule, t.kind, t.from_level, t.to_level, _round(t.value)) for t in self.transitions(after, battery,
                                                                                                       **values)]

    def transitions(self, after: float = 0.0, battery: dict | None = None, **values) -> list:
        self.clock.advance(after)
        pack = None if battery is None else SlotReading(1, battery_id="P1", **battery)
        reading = VehicleReading("V000001", "bj", int(self.clock.now * 1e9), battery=pack, **values)
        return self.engine.evaluate(as_engine_reading(reading))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# -- wheel motion while armed (V-5.1): level 2 at >= 3 km/h, at once; clears 5 minutes after ----------------------

def test_wheel_motion_raises_at_3_kmh_while_armed_and_clears_five_minutes_after_it_stops() -> None:
    v = Vehicle("wheel_motion_armed")
    assert v.report(armed=True, speed_kmh=2.99) == []
    assert v.report(armed=False, speed_kmh=20.0) == []  # ridden by its user: not armed
    assert v.report(armed=None, speed_kmh=20.0) == []  # arming not reported: nothing decided
    assert v.report(armed=True, speed_kmh=3.0) == [("wheel_motion_armed", "raise", 0, 2, 3.0)]
    assert v.report(after=10, armed=True, speed_kmh=0.0) == []
    assert v.report(after=299, armed=True, speed_kmh=0.0) == []  # 299 s after it stopped
    assert v.report(after=1, armed=True, speed_kmh=0.0) == [("wheel_motion_armed", "clear", 2, 0, 0.0)]


def test_disarming_clears_wheel_motion_after_the_same_delay() -> None:
    v = Vehicle("wheel_motion_armed")
    assert v.report(armed=True, speed_kmh=5.0) == [("wheel_motion_armed", "raise", 0, 2, 5.0)]
    assert v.report(after=60, armed=False, speed_kmh=5.0) == []
    assert v.report(after=240, armed=None, speed_kmh=5.0) == []  # no arming state: kept, and no clock restart
    assert v.report(after=59, armed=False, speed_kmh=5.0) == []
    assert v.report(after=1, armed=False, speed_kmh=5.0) == [("wheel_motion_armed", "clear", 2, 0, 5.0)]


def test_a_wheel_motion_alert_names_the_vehicle_and_asks_for_the_motor_lock_only_when_raised() -> None:
    v = Vehicle("wheel_motion_armed")
    [t] = v.transitions(battery={"soc_pct": 80.0}, armed=True, speed_kmh=3.0)
    assert (t.target.site, t.target.cabinet, t.target.slot, t.target.battery) == ("bj", "V000001", None, "P1")
    assert (t.vehicle_command, t.protective_action) == ("motor_lock", None)
    assert t.labels == {"alertname": "wheel_motion_armed", "rule": "wheel_motion_armed", "level": "2",
                        "severity": "warning", "site": "bj", "cabinet": "V000001", "vehicle": "V000001",
                        "battery": "P1"}
    assert t.annotations == {
        "summary": "L2 Wheel motion while armed 3 km/h at bj/V000001 vehicle",
        "diagnosis": "Vehicle V000001 is armed and its wheels turn at 3 km/h: possible theft.",
        "action": "A motor-lock command goes to the vehicle. Call the user now: confirm whether they are moving "
                  "the vehicle; if not, track it and report the theft."}
    assert (t.diagnosis, t.action) == (t.annotations["diagnosis"], t.annotations["action"])
    assert v.transitions(after=10, armed=False, speed_kmh=0.0) == []
    [cleared] = v.transitions(after=300, armed=False, speed_kmh=0.0)
    assert (cleared.kind, cleared.vehicle_command, cleared.target.battery) == ("clear", None, "P1")  # pack kept
    assert cleared.labels["level"] == "2" and cleared.labels["vehicle"] == "V000001"
    assert cleared.annotations["summary"] == "L2 Wheel motion while armed 0 km/h at bj/V000001 vehicle"


def test_a_vehicle_alert_in_chinese_names_the_vehicle() -> None:
    v = Vehicle("wheel_motion_armed", language="zh_CN")
    [t] = v.transitions(armed=True, speed_kmh=3.0)
    assert t.annotations["summary"] == "L2 设防轮动报警 3 km/h（bj/V000001号车）"
    assert t.target.battery is None and "battery" not in t.labels  # no pack reported: none named


# -- geofence (V-5.2): level 2 beyond 1.2 R while armed, hysteresis 0.1, clears 5 minutes after ------------------

FENCE = VehicleProfile(fence_radius_m=111.132, home_latitude_deg=0.0, home_longitude_deg=116.5)


def _at(ratio_thousandths: float) -> dict:
    """A position ``ratio`` fence radii north of home (0.001° of latitude is 111.132 m, one radius)."""
    return {"latitude_deg": ratio_thousandths, "longitude_deg": 116.5, "profile": FENCE}


def test_the_fence_alarm_is_beyond_one_point_two_radii_with_hysteresis_and_a_clear_delay() -> None:
    v = Vehicle("geofence_exit")
    assert v.report(armed=True, **_at(0.0012)) == []  # exactly 1.2 R: not beyond
    assert v.report(armed=False, **_at(0.005)) == []  # 5 R away, not armed
    assert v.report(armed=True, **_at(0.00121)) == [("geofence_exit", "raise", 0, 2, 1.21)]
    assert v.report(after=600, armed=True, **_at(0.00111)) == []  # 1.11 R: within the 0.1 hysteresis
    assert v.report(armed=True, **_at(0.00109)) == []  # 1.09 R: back inside, the 5-minute delay starts
    assert v.report(after=299, armed=True, **_at(0.00109)) == []
    assert v.report(after=1, armed=True, **_at(0.00109)) == [("geofence_exit", "clear", 2, 0, 1.09)]
    [t] = v.transitions(armed=True, **_at(0.002))
    assert (t.to_level, t.vehicle_command, t.protective_action) == (2, None, None)  # an alarm, no lock


def test_no_fence_or_no_fix_is_no_decision() -> None:
    v = Vehicle("geofence_exit")
    assert v.report(armed=True, latitude_deg=1.0, longitude_deg=116.5) == []  # no fence set
    assert v.report(armed=True, profile=FENCE) == []  # no position fix


# -- low SOC reminder (V-5.6): level 1 below the user's SOC, clears 2 points above ----------------------------------

def test_the_low_soc_reminder_is_below_the_users_level_and_clears_two_points_above() -> None:
    v = Vehicle("vehicle_low_soc")
    profile = VehicleProfile(low_soc_pct=25.0)
    assert v.report(profile=profile, battery={"soc_pct": 25.0}) == []
    assert v.report(profile=profile, battery={"soc_pct": 24.5}) == [("vehicle_low_soc", "raise", 0, 1, 0.5)]
    assert v.report(profile=profile, battery={"soc_pct": 26.9}) == []
    assert v.report(profile=profile, battery={"soc_pct": 27.0}) == [("vehicle_low_soc", "clear", 1, 0, -2.0)]
    assert v.report(profile=VehicleProfile(), battery={"soc_pct": 5.0}) == []  # no reminder set


# -- discharge protection (V-5.10): level 2 while driving below 38.4 V (Li-ion) / 30 V (Na-ion), 30 s -----------

@pytest.mark.parametrize(("pack", "limit"), [(NMC_48V, 38.4), (NA_48V, 30.0)], ids=["li-ion", "na-ion"])
def test_discharge_below_the_protection_voltage_of_the_chemistry_for_30_s_powers_the_vehicle_off(
        pack: dict, limit: float) -> None:
    v = Vehicle("discharge_protection")
    assert v.report(battery={**pack, **DRIVING, "voltage_v": limit}) == []
    assert v.report(after=60, battery={**pack, **DRIVING, "voltage_v": limit}) == []  # at the limit: allowed
    below = round(limit - 0.1, 2)
    assert v.report(after=30, battery={**pack, **DRIVING, "voltage_v": below}) == []  # one report: a sag
    assert v.report(after=29.9, battery={**pack, **DRIVING, "voltage_v": below}) == []
    [t] = v.transitions(after=0.1, battery={**pack, **DRIVING, "voltage_v": below})
    assert (t.rule, t.kind, t.to_level, round(t.value, 6)) == ("discharge_protection", "raise", 2, 0.1)
    assert (t.vehicle_command, t.protective_action) == ("power_off", None)
    assert v.report(battery={**pack, **DRIVING, "voltage_v": round(limit + 0.49, 2)}) == []  # hysteresis 0.5
    assert v.report(battery={**pack, **DRIVING, "voltage_v": limit + 0.5}) == [
        ("discharge_protection", "clear", 2, 0, -0.5)]


def test_discharge_protection_reads_only_a_pack_that_drives_the_vehicle() -> None:
    v = Vehicle("discharge_protection")
    resting = {**NMC_48V, "voltage_v": 36.0, "charge_current_a": -0.99}
    assert v.report(battery=resting) == [] and v.report(after=60, battery=resting) == []
    driving = {**NMC_48V, "voltage_v": 36.0, "charge_current_a": -1.0}
    assert v.report(after=60, battery=driving) == []
    assert v.report(after=30, battery=driving) == [("discharge_protection", "raise", 0, 2, 2.4)]
    assert v.report(after=600, battery=resting) == []  # at rest: no value, the alert stays
    assert v.engine.state.worst_level() == 2


# -- chemistry mismatch (V-5.10): level 2 above 0.25 V per cell, held 2 minutes -------------------------------------

def test_a_pack_beyond_its_chemistrys_end_of_charge_by_more_than_a_quarter_volt_per_cell() -> None:
    v = Vehicle("chemistry_mismatch")
    lfp = {"chemistry": int(Chemistry.LFP), **DRIVING}
    assert v.report(battery={**lfp, "cell_voltage_max_v": 3.9}) == []  # 3.65 V + 0.25: not beyond
    assert v.report(after=600, battery={**lfp, "cell_voltage_max_v": 3.9}) == []
    assert v.report(battery={**lfp, "cell_voltage_max_v": 3.91}) == []
    assert v.report(after=119, battery={**lfp, "cell_voltage_max_v": 3.91}) == []
    assert v.report(after=1, battery={**lfp, "cell_voltage_max_v": 3.91}) == [
        ("chemistry_mismatch", "raise", 0, 2, 0.26)]
    assert v.report(battery={**lfp, "cell_voltage_max_v": 3.86}) == []  # hysteresis 0.05: held
    assert v.report(battery={**lfp, "cell_voltage_max_v": 3.8}) == [("chemistry_mismatch", "clear", 2, 0, 0.15)]


def test_a_declared_nominal_voltage_that_fits_another_chemistry_is_a_mismatch() -> None:
    v = Vehicle("chemistry_mismatch")
    sodium_declared = {"chemistry": int(Chemistry.NA_ION), "nominal_voltage_v": 46.8, "cell_count": 13}  # NMC 13S
    assert v.report(battery=sodium_declared) == []
    assert v.report(after=120, battery=sodium_declared) == [("chemistry_mismatch", "raise", 0, 2, 0.5)]


# -- clock skew (V-4.6): level 1 beyond 30 s for 10 minutes, hysteresis 10 s ---------------------------------------

def test_a_clock_off_by_more_than_30_s_for_10_minutes_is_a_notice() -> None:
    v = Vehicle("clock_skew")

    def skewed(seconds: float, after: float = 0.0) -> list[tuple]:
        return v.report(after=after, received_ns=int((v.clock.now + after + seconds) * 1e9))

    assert skewed(30.0) == []
    assert skewed(30.0, after=900) == []  # exactly 30 s off: fine
    assert skewed(-31.0) == []  # either way
    assert skewed(31.0, after=599) == []
    assert skewed(31.0, after=1) == [("clock_skew", "raise", 0, 1, 31.0)]
    assert skewed(20.5, after=30) == []  # within the 10 s hysteresis
    assert skewed(20.0, after=30) == [("clock_skew", "clear", 1, 0, 20.0)]


# -- report overdue (V-5.7, V-5.8): level 1 at 3 intervals, level 2 at 15 -------------------------------------------

def test_reports_overdue_by_3_and_15_intervals() -> None:
    v = Vehicle("report_overdue")
    gaps = [2.99, 3.0, 14.99, 15.0, 3.0, 2.99, 1.0]
    got = [v.report(after=60, powered_on=True, report_gap_intervals=g) for g in gaps]
    assert got == [
        [], [("report_overdue", "raise", 0, 1, 3.0)], [], [("report_overdue", "escalate", 1, 2, 15.0)],
        [("report_overdue", "deescalate", 2, 1, 3.0)], [("report_overdue", "clear", 1, 0, 2.99)], []]


# -- what runs where: vehicle rules on vehicles, cabinet rules on cabinets, slot rules on both --------------------

def test_vehicle_rules_never_run_on_a_cabinet_and_cabinet_rules_never_on_a_vehicle() -> None:
    clock = ManualClock(T0)
    engine = Engine(load_rules().only(["report_overdue", "cabinet_water"]), clock=clock, language="en")
    cabinet = CabinetReading("C1", "s1", "reference-cabinet", int(T0 * 1e9), water_detected=True)
    assert engine.evaluate(cabinet) == []
    clock.advance(10)
    assert [(t.rule, t.target.cabinet) for t in engine.evaluate(cabinet)] == [("cabinet_water", "C1")]
    vehicle = VehicleReading("V000001", "bj", int(T0 * 1e9), report_gap_intervals=20.0)
    as_cabinet = as_engine_reading(vehicle)
    assert [(t.rule, t.to_level) for t in engine.evaluate(as_cabinet)] == [("report_overdue", 2)]
    clock.advance(10)
    as_cabinet.water_detected = True  # a cabinet field on a vehicle's report: no cabinet rule reads it
    assert engine.evaluate(as_cabinet) == []


def test_a_battery_rule_on_a_vehicles_pack_tells_people_what_to_do_instead_of_cutting_a_slot_off() -> None:
    v = Vehicle("over_temperature")
    hot = {"temperature_c": 75.0}
    assert v.report(battery=hot) == []
    [t] = v.transitions(after=20, battery=hot)
    assert (t.rule, t.kind, t.to_level, t.target.slot, t.target.battery) == ("over_temperature", "raise", 3, 1, "P1")
    assert (t.protective_action, t.vehicle_command) == (None, None)  # a cabinet cut-off has no vehicle counterpart
    assert t.labels["vehicle"] == "V000001" and t.labels["slot"] == "1"
    assert t.annotations["summary"] == "L3 Battery over-temperature 75.0 °C at bj/V000001 battery"
    assert t.action == ("Call the rider now: stop, get off, keep away from the battery and from buildings and "
                        "people; send staff. Battery P1.")
    [t] = v.transitions(after=20, battery={"temperature_c": 60.0})
    assert (t.kind, t.to_level) == ("deescalate", 2)
    assert t.action == ("Tell the rider to end the ride and swap battery P1 at the nearest station; inspect it "
                        "before it is issued again.")
    [t] = v.transitions(after=20, battery={"temperature_c": 51.0})  # above 50 for 5 minutes already: level 1
    assert (t.kind, t.to_level, t.action) == ("deescalate", 1, "Watch battery P1; inspect it at its next swap.")


def test_a_vehicle_command_is_asked_on_a_raise_and_an_escalation_only() -> None:
    from alerting.rules import parse_rules

    rules = parse_rules("""
rules:
  - id: pack_low
    scope: slot
    input: {field: voltage_v}
    compare: "<"
    levels: {1: 40, 2: 38}
    vehicle_command: power_off
    description: d
    source: V-5.10
    diagnosis: "x {value}"
    action: "y"
""")
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock)
    got = []
    for volts in (39.0, 37.0, 39.0, 45.0):
        reading = VehicleReading("V000001", "bj", int(clock.now * 1e9), battery=SlotReading(1, voltage_v=volts))
        got += [(t.kind, t.vehicle_command) for t in engine.evaluate(as_engine_reading(reading))]
    assert got == [("raise", "power_off"), ("escalate", "power_off"), ("deescalate", None), ("clear", None)]


def test_a_vehicle_rule_on_changes_measures_them_by_the_reports_own_times() -> None:
    from alerting.rules import parse_rules

    rules = parse_rules("""
rules:
  - id: odometer_jump
    scope: vehicle
    input: {jump: odometer_km}
    levels: {1: 1}
    description: d
    source: test
    diagnosis: "x {value}"
    action: "y"
""")
    clock = ManualClock(T0)
    engine = Engine(rules, clock=clock)

    def report(at: float, km: float) -> list:
        reading = VehicleReading("V000001", "bj", int((T0 + at) * 1e9), odometer_km=km)
        return [(t.kind, t.value) for t in engine.evaluate(as_engine_reading(reading))]

    assert report(0, 10.0) == []
    assert report(181, 12.0) == []  # 181 s apart by the vehicle's clock: not consecutive
    assert report(361, 13.5) == [("raise", 1.5)]  # 180 s apart
