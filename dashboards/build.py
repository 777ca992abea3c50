"""The Cascade Grafana dashboards, one function per panel.

``python -m dashboards`` writes ``dashboards/<uid>.json`` for every dashboard in :data:`DASHBOARDS`;
tests/test_dashboards.py checks the committed files equal :func:`render` of these builders and runs
every query against a live InfluxDB + Prometheus. Documented in docs/dashboards.md.

Value thresholds (the coloured steps and lines on temperature, H2 and CO panels) are not written
here: they are read from the warning catalogue (alerting/catalogue.yaml) when the dashboards are
built, so a panel turns orange exactly where the engine raises level 2. See :func:`threshold_steps`.

Query conventions: InfluxQL uses Grafana's ``$timeFilter`` and ``$__interval`` and groups by
``time($__interval) fill(null)`` so gaps stay gaps; PromQL rates use ``$__rate_interval``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerting.rules import DEFAULT_CATALOGUE, Level, Rule, RuleSet, load_rules
from core.errors import InputError
from dashboards.panels import (
    DETECTED_MAPPINGS,
    LEVEL_COLOURS,
    LEVEL_MAPPINGS,
    LEVEL_STEPS,
    Panel,
    annotation,
    bargauge,
    color_cells,
    dashboard,
    influx,
    influx_variable,
    link_override,
    override,
    prom,
    stat,
    table,
    textbox_variable,
    timeseries,
)

__all__ = ["DASHBOARDS", "DIRECTORY", "Watched", "build_all", "level_thresholds", "render", "threshold_steps",
           "write_all"]

DIRECTORY = Path(__file__).resolve().parent

# Steps for counts (alerts, failures): any at all is bad. Not warning thresholds, so not catalogue values.
BAD_IF_ANY = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
GREEN = [{"color": "green", "value": None}]

CABINET_URL = "/d/cascade-cabinet/cascade-cabinet?var-site=${__data.fields.site}&var-cabinet=${__data.fields.cabinet}"
BATTERY_URL = "/d/cascade-battery/cascade-battery?var-battery=${__value.raw}"

# Template-variable filters.
FLEET_SITE = '"site" =~ /^$site$/'
PROM_SITE = 'site=~"$site"'
CAB = '"site" =~ /^$site$/ AND "cabinet" =~ /^$cabinet$/'
SLOT = CAB + ' AND "slot" =~ /^$slot$/'
BATTERY = "\"battery_id\" = '$battery'"

ALERT_COLUMNS = ('"site", "cabinet", "slot", "rule", "severity", "kind", "level", "from_level", "value", '
                 '"battery", "summary", "diagnosis", "action"')
COMMAND_COLUMNS = '"site", "cabinet", "slot", "command", "actor", "value", "readback", "ok", "error", "duration_s"'


# =================================================================================================
# Value thresholds, derived from the warning catalogue
# =================================================================================================

@dataclass(frozen=True)
class Watched:
    """A reading field a panel colours by the levels of the catalogue rule that watches it."""

    rule: str  # catalogue rule id
    field: str  # the rule's input must be this field (not a ratio, rate or difference; a baseline is allowed)
    unit: str  # the rule's unit: a rule rescaled to another unit must not colour this axis


# The rule reads the hottest of pack, cell and surface temperature; the panels that plot one of
# them (or the hottest-battery gauge) are coloured by the same levels.
PACK_TEMPERATURE = Watched("over_temperature", "hottest_temperature_c", "°C")
# h2_gas measures the excess over the cabinet's lowest other slot; the panel plots the reading,
# which equals the excess wherever the cabinet's other slots read ~0 ppm (the normal case).
H2 = Watched("h2_gas", "h2_ppm", "ppm over cabinet")
CO = Watched("cabinet_co", "co_ppm", "ppm")

# Grafana colours a value with the highest step it reaches (value >= step): the same test as the
# engine's ">=". A ">" rule differs only at exactly the threshold, which a colour cannot show.
# "<" rules (low-side warnings) would need falling steps; no panel draws one, so they are refused.
_RISING = {">=": "≥", ">": ">"}


def _fail(rules: RuleSet, watched: Watched, problem: str) -> InputError:
    """The generation-time error: catalogue file, rule, field and both ways out."""
    catalogue = next(iter(rules.values())).file  # RuleSet keeps no name of its own; every rule has it
    return InputError(catalogue, f"rule {watched.rule!r}", f"{problem}; the dashboards colour field "
                      f"{watched.field!r} ({watched.unit}) by this rule's levels 1, 2 and 3",
                      f"give {watched.rule!r} levels 1-3 on {watched.field} ({watched.unit}) again, or change "
                      "the panel's Watched rule in dashboards/build.py")


def _watching_rule(rules: RuleSet, watched: Watched) -> Rule:
    """The rule, checked to still measure ``watched.field`` in ``watched.unit`` directly."""
    rule = rules.get(watched.rule)
    if rule is None:
        raise _fail(rules, watched, "no such rule in the catalogue")
    inp = rule.input
    if inp is None or inp.kind != "field" or inp.fields != (watched.field,) or inp.per is not None:
        found = rule.input.describe() if rule.input else "a fusion score"
        raise _fail(rules, watched, f"the rule now measures {found}, not {watched.field}")
    if rule.unit != watched.unit:
        raise _fail(rules, watched, f"the rule's unit is {rule.unit!r}, not {watched.unit!r}")
    return rule


def _panel_levels(rules: RuleSet, watched: Watched) -> dict[int, Level]:
    """Levels 1–3 of the watching rule, all rising. The rule's *base* levels: a panel mixes every
    cabinet model and chemistry, so per-chemistry/model ``overrides`` cannot be drawn as one line;
    base levels are what the engine applies where no override matches and what a run-time
    ``Engine.set_threshold`` changes (docs/warnings.md). Run-time changes are not in the file, so
    not on the dashboards either: regenerate after changing the catalogue."""
    rule = _watching_rule(rules, watched)
    levels = {lv.level: lv for lv in rule.levels}
    missing = [str(n) for n in LEVEL_COLOURS if n not in levels]
    if missing:
        raise _fail(rules, watched, f"the rule has no level {', '.join(missing)}")
    falling = [str(n) for n, lv in levels.items() if lv.compare not in _RISING]
    if falling:
        raise _fail(rules, watched, f"level {', '.join(falling)} compares with '<' (a low-side warning)")
    return levels


def level_thresholds(rules: RuleSet, watched: Watched) -> dict[int, float]:
    """Level (1, 2, 3) → threshold of the rule watching ``watched.field``."""
    return {n: lv.threshold for n, lv in _panel_levels(rules, watched).items()}


def _grafana_number(value: float) -> int | float:
    # Thresholds load as floats; whole numbers are written as ints so the JSON says 45, not 45.0
    # (what Grafana itself saves, and what the committed files have always had).
    return int(value) if value.is_integer() else value


def threshold_steps(rules: RuleSet, watched: Watched) -> list[dict[str, Any]]:
    """Grafana threshold steps: green base, then level 1 yellow, 2 orange, 3 red at the rule's values."""
    thresholds = level_thresholds(rules, watched)
    return [{"color": "green", "value": None}] + [
        {"color": colour, "value": _grafana_number(thresholds[n])} for n, colour in LEVEL_COLOURS.items()]


def _levels_text(rules: RuleSet, watched: Watched) -> str:
    """``level 1 ≥ 45 °C, level 2 ≥ 55 °C, level 3 ≥ 70 °C`` for panel descriptions."""
    levels = _panel_levels(rules, watched)
    return ", ".join(f"level {n} {_RISING[levels[n].compare]} {levels[n].threshold:g} {watched.unit}"
                     for n in LEVEL_COLOURS)


def _thresholds_slashed(rules: RuleSet, watched: Watched) -> str:
    """``30/100/400`` (levels 1/2/3) for panel descriptions."""
    thresholds = level_thresholds(rules, watched)
    return "/".join(f"{thresholds[n]:g}" for n in LEVEL_COLOURS)


def _level_columns() -> list[dict[str, Any]]:
    return [color_cells(name, mappings=LEVEL_MAPPINGS, thresholds={"mode": "absolute", "steps": LEVEL_STEPS})
            for name in ("level", "from_level", "worst_level")]


def _command_columns() -> list[dict[str, Any]]:
    ok = [{"type": "value", "options": {"true": {"text": "OK", "color": "green", "index": 0},
                                        "false": {"text": "FAILED", "color": "red", "index": 1}}}]
    return [color_cells("ok", mappings=ok), override("duration_s", unit="s")]


# =================================================================================================
# cascade-fleet: NOC overview
# =================================================================================================

def fleet_devices_online() -> Panel:
    return stat("Cabinets online / offline",
                "Cabinets whose last poll succeeded (cascade_device_up = 1) and those that failed.",
                [prom(f"sum(cascade_device_up{{{PROM_SITE}}})", legend="online", instant=True),
                 prom(f"count(cascade_device_up{{{PROM_SITE}}} == 0) or vector(0)", ref="B", legend="offline",
                      instant=True)],
                w=6, h=5)


def fleet_alerts_by_level() -> Panel:
    return stat("Active alerts by level",
                "Active safety alerts per level (recording rule cascade:alerts_active:sum_by_level), "
                "failed protective actions included at level 3.",
                [prom("cascade:alerts_active:sum_by_level", legend="level {{level}}", instant=True)],
                w=8, h=5, thresholds=BAD_IF_ANY)


def fleet_offline_cabinets() -> Panel:
    return table("Offline cabinets", "Cabinets whose last poll failed; their batteries are unmonitored.",
                 [prom(f"cascade_device_up{{{PROM_SITE}}} == 0", instant=True, table_format=True)],
                 w=10, h=5,
                 transformations=[{"id": "organize", "options": {
                     "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                     "indexByName": {"site": 0, "cabinet": 1, "instance": 2}, "renameByName": {}}}],
                 overrides=[link_override("cabinet", "Open cabinet", CABINET_URL)])


def fleet_hottest_battery(rules: RuleSet) -> Panel:
    # The gauge is the max over slots of hottest_temperature_c (exporters/prometheus.py), which is
    # what over_temperature reads; a sensor at its limit shows the limit ("at least").
    return bargauge("Hottest battery per cabinet",
                    "Highest battery temperature (pack, cell or surface sensor) in each cabinet at its last "
                    "poll, hottest first. "
                    f"Colours: {_levels_text(rules, PACK_TEMPERATURE)} ({PACK_TEMPERATURE.rule}).",
                    [prom(f"sort_desc(cascade_cabinet_battery_temperature_max_celsius{{{PROM_SITE}}})",
                          legend="{{site}}/{{cabinet}}", instant=True)],
                    unit="celsius", thresholds=threshold_steps(rules, PACK_TEMPERATURE))


def fleet_h2_max(rules: RuleSet) -> Panel:
    return bargauge("Max H2 / off-gas per cabinet",
                    "Highest compartment H2/off-gas reading in each cabinet (P-5.2.2.2 a), highest first. "
                    f"Colours: {H2.rule} levels 1/2/3 at {_thresholds_slashed(rules, H2)} {H2.unit}.",
                    [prom(f"sort_desc(cascade_cabinet_h2_max_ppm{{{PROM_SITE}}})", legend="{{site}}/{{cabinet}}",
                          instant=True)],
                    unit="ppm", thresholds=threshold_steps(rules, H2))


def fleet_co(rules: RuleSet) -> Panel:
    return timeseries("CO per cabinet", "CO concentration inside each cabinet (P-5.2.2.3); lines at the "
                      f"{CO.rule} levels 1/2/3 ({_thresholds_slashed(rules, CO)} {CO.unit}).",
                      [prom(f"cascade_cabinet_co_ppm{{{PROM_SITE}}}", legend="{{site}}/{{cabinet}}")],
                      unit="ppm", thresholds=threshold_steps(rules, CO))


def fleet_hazard_states() -> Panel:
    expr = "cascade_cabinet_{}_detected{{" + PROM_SITE + "}}"
    targets = [prom(expr.format(kind), ref=ref, instant=True, table_format=True)
               for ref, kind in (("A", "smoke"), ("B", "flame"), ("C", "water"))]
    return table("Smoke / flame / water", "Detector state of every cabinet at its last poll (P-5.2.2.3, "
                 "P-5.2.1d). Any DETECTED is a level-3 alert (cabinet_smoke, cabinet_flame, cabinet_water).",
                 targets, w=12, h=8,
                 sort_by="flame",
                 transformations=[
                     {"id": "merge", "options": {}},
                     {"id": "organize", "options": {
                         "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                         "indexByName": {"site": 0, "cabinet": 1, "Value #A": 2, "Value #B": 3, "Value #C": 4},
                         "renameByName": {"Value #A": "smoke", "Value #B": "flame", "Value #C": "water"}}}],
                 overrides=[color_cells(name, mappings=DETECTED_MAPPINGS) for name in ("smoke", "flame", "water")]
                 + [link_override("cabinet", "Open cabinet", CABINET_URL)])


def fleet_slots() -> Panel:
    return timeseries("Slots charging / occupied", "Batteries docked and charging across the fleet; slots "
                      "with a charger or BMS protection flag set.",
                      [prom(f"sum(cascade_cabinet_slots_occupied{{{PROM_SITE}}})", legend="occupied"),
                       prom(f"sum(cascade_cabinet_slots_charging{{{PROM_SITE}}})", ref="B", legend="charging"),
                       prom(f"sum(cascade_cabinet_slots_protection_active{{{PROM_SITE}}})", ref="C",
                            legend="protection active")],
                      unit="short")


def fleet_input_power() -> Panel:
    return timeseries("Cabinet input power", "Input power per site, stacked (P-5.1.1.1).",
                      [prom(f"sum by (site) (cascade_cabinet_input_power_watts{{{PROM_SITE}}})", legend="{{site}}")],
                      unit="watt", stack=True)


def fleet_worst_level() -> Panel:
    return table("Cabinets by worst alert level",
                 "Cabinets with an active alert, worst first: the alert service's roll-up gauge "
                 "cascade_cabinet_alert_level (battery -> slot -> cabinet; 0 = none), so an alert raised "
                 "before the start of the time range still shows.",
                 [prom(f"sort_desc(cascade_cabinet_alert_level{{{PROM_SITE}}} > 0)", instant=True,
                       table_format=True)], w=12, h=8, sort_by="worst_level",
                 transformations=[{"id": "organize", "options": {
                     "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                     "indexByName": {"site": 0, "cabinet": 1, "Value": 2},
                     "renameByName": {"Value": "worst_level"}}}],
                 overrides=_level_columns() + [link_override("cabinet", "Open cabinet", CABINET_URL)])


def fleet_poll_errors() -> Panel:
    return timeseries("Poll errors by kind", "Failed Modbus polls per second by error kind (connect, timeout, "
                      "modbus exception...).",
                      [prom("sum by (kind) (rate(cascade_poll_errors_total[$__rate_interval]))", legend="{{kind}}")],
                      unit="reqps", bars=True)


def fleet_decode_errors() -> Panel:
    return timeseries("Decode errors by field", "Register values rejected as garbage per second, by profile "
                      "field; the field is absent from the stored point.",
                      [prom("sum by (field) (rate(cascade_decode_errors_total[$__rate_interval]))",
                            legend="{{field}}")],
                      unit="reqps", bars=True)


def fleet_locations() -> Panel:
    query = ('SELECT last("latitude_deg") AS "latitude", last("longitude_deg") AS "longitude" FROM "cabinet" '
             'WHERE $timeFilter AND ' + FLEET_SITE + ' GROUP BY "site", "cabinet"')
    return table("Cabinet locations", "Reported position of each cabinet (P-5.2.1e, D-B.1); a docked "
                 "battery is where its cabinet is.", [influx(query, table_format=True)], w=12, h=8,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[link_override("cabinet", "Open cabinet", CABINET_URL)])


def build_fleet(rules: RuleSet) -> dict[str, Any]:
    site = influx_variable("site", "Site", 'SHOW TAG VALUES FROM "cabinet" WITH KEY = "site"', multi=True,
                           include_all=True, all_value=".*")
    alerts = annotation("Alerts (level ≥ 2)",
                        'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE $timeFilter AND '
                        + FLEET_SITE + ' AND ("level" >= 2 OR "from_level" >= 2)', color="red")
    return dashboard(
        "cascade-fleet", "Cascade / Fleet overview",
        "NOC overview of every cabinet: connectivity, active alerts, temperatures, gases, detectors, power.",
        [fleet_devices_online(), fleet_alerts_by_level(), fleet_offline_cabinets(),
         fleet_worst_level(), fleet_hazard_states(),
         fleet_hottest_battery(rules), fleet_h2_max(rules),
         fleet_co(rules), fleet_slots(),
         fleet_input_power(), fleet_locations(),
         fleet_poll_errors(), fleet_decode_errors()],
        tags=["cascade", "noc"], variables=[site], annotations=[alerts], refresh="10s", time_from="now-3h")


# =================================================================================================
# cascade-cabinet: drill-down to one cabinet and its slots
# =================================================================================================

def _slot_series(title: str, description: str, field: str, unit: str, *, agg: str = "mean",
                 thresholds: list[dict[str, Any]] | None = None) -> Panel:
    query = (f'SELECT {agg}("{field}") FROM "slot" WHERE $timeFilter AND {SLOT} '
             'GROUP BY time($__interval), "slot" fill(null)')
    return timeseries(title, description, [influx(query, alias="slot $tag_slot")], unit=unit,
                      thresholds=thresholds)


def cabinet_temperature(rules: RuleSet) -> Panel:
    return _slot_series("Pack temperature", "BMS pack temperature per slot (D-B.3).", "temperature_c", "celsius",
                        agg="max", thresholds=threshold_steps(rules, PACK_TEMPERATURE))


def cabinet_surface_temperature() -> Panel:
    return _slot_series("Surface temperature", "Battery surface temperature per slot (P-5.2.2.3).",
                        "surface_temperature_c", "celsius", agg="max")


def cabinet_voltage() -> Panel:
    return _slot_series("Pack voltage", "Pack voltage per slot.", "voltage_v", "volt")


def cabinet_current() -> Panel:
    return _slot_series("Charge current", "Charge current per slot; negative = discharge.", "charge_current_a",
                        "amp")


def cabinet_soc() -> Panel:
    return _slot_series("State of charge", "SOC per slot.", "soc_pct", "percent")


def cabinet_soh() -> Panel:
    return _slot_series("State of health", "SOH per slot (second-life packs).", "soh_pct", "percent", agg="min")


def cabinet_cell_voltage_spread() -> Panel:
    query = ('SELECT (max("cell_voltage_max_v") - min("cell_voltage_min_v")) * 1000 AS "spread" FROM "slot" '
             f'WHERE $timeFilter AND {SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries("Cell voltage spread", "Highest minus lowest cell voltage per slot (worst in each "
                      "interval); a growing spread is an imbalanced or failing cell.",
                      [influx(query, alias="slot $tag_slot")], unit="mvolt")


def cabinet_cell_temperature_spread() -> Panel:
    query = ('SELECT max("cell_temperature_max_c") - min("cell_temperature_min_c") AS "spread" FROM "slot" '
             f'WHERE $timeFilter AND {SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries("Cell temperature spread", "Hottest minus coldest cell per slot (worst in each interval).",
                      [influx(query, alias="slot $tag_slot")], unit="celsius")


def cabinet_h2(rules: RuleSet) -> Panel:
    return _slot_series("H2 / off-gas", f"Compartment H2/off-gas per slot (P-5.2.2.2 a); lines at the {H2.rule} "
                        "levels.", "h2_ppm", "ppm", agg="max", thresholds=threshold_steps(rules, H2))


def cabinet_voc() -> Panel:
    return _slot_series("VOC (electrolyte vapour)", "Compartment VOC per slot (P-5.2.2.2 c).", "voc_ppm", "ppm",
                        agg="max")


def cabinet_pressure() -> Panel:
    return _slot_series("Module pressure", "Module pressure per slot (P-5.2.2.2 d).", "module_pressure_kpa",
                        "pressurekpa", agg="max")


def cabinet_valve_events() -> Panel:
    query = ('SELECT non_negative_difference(max("valve_acoustic_events")) FROM "slot" WHERE $timeFilter AND '
             f'{SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries("Valve events", "New acoustic safety-valve events per interval and slot "
                      "(P-5.2.2.2 b; the register is a cumulative count).",
                      [influx(query, alias="slot $tag_slot")], unit="short", bars=True)


def cabinet_environment() -> Panel:
    query = ('SELECT mean("cabinet_temperature_c") AS "cabinet °C", max("co_ppm") AS "CO ppm", '
             'max("co2_ppm") AS "CO2 ppm" FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY time($__interval) fill(null)')
    return timeseries("Cabinet temperature, CO, CO2", "Sensors inside the cabinet (P-5.2.2.3).",
                      [influx(query, alias="$col")], unit="short")


def cabinet_power() -> Panel:
    query = ('SELECT mean("input_voltage_v") AS "voltage V", mean("input_current_a") AS "current A", '
             'mean("input_power_w") / 1000 AS "power kW" FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY time($__interval) fill(null)')
    return timeseries("Cabinet input", "Input voltage, current and power (P-5.1.1.1).",
                      [influx(query, alias="$col")], unit="short")


def cabinet_status() -> Panel:
    query = ('SELECT last("distribution_state") AS "distribution_state", last("device_fault_code") AS '
             '"device_fault_code", last("emergency_state_text") AS "emergency_state", last("flame_detected") AS '
             '"flame", last("smoke_detected") AS "smoke", last("water_detected") AS "water", '
             'last("fire_suppression_type") AS "suppression", last("latitude_deg") AS "latitude", '
             'last("longitude_deg") AS "longitude" FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY "model"')
    return table("Cabinet status", "Last distribution state (bit 0 mains, bit 1 breaker), device fault code, "
                 "emergency state, detectors, fire suppression and position (P-5.1.1.1, D-B.1, D-B.4, P-5.2.1e).",
                 [influx(query, table_format=True)], h=5,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}])


def cabinet_batteries() -> Panel:
    query = ('SELECT last("battery_id") AS "battery_id", last("battery_maker") AS "maker", last("chemistry") AS '
             '"chemistry", last("battery_state") AS "state", last("soc_pct") AS "soc", last("charge_count") AS '
             f'"cycles" FROM "slot" WHERE $timeFilter AND {SLOT} GROUP BY "slot"')
    states = [{"type": "value", "options": {str(value): {"text": text, "index": value} for value, text in
                                            enumerate(("empty", "charging", "full", "discharging", "fault",
                                                       "idle"))}}]
    chemistry = [{"type": "value", "options": {str(value): {"text": text, "index": value} for value, text in
                                               enumerate(("unknown", "LFP", "NMC", "LMO", "Na-ion"))}}]
    return table("Batteries in the slots", "Battery id, maker, chemistry, state, SOC and cycle count last "
                 "reported per slot; click an id for its history (P-6.3).", [influx(query, table_format=True)],
                 w=12, h=10, sort_by="slot", descending=False,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[link_override("battery_id", "Battery history", BATTERY_URL),
                            override("state", mappings=states), override("chemistry", mappings=chemistry),
                            override("soc", unit="percent"), override("slot", unit="none")])


def cabinet_protection_flags() -> Panel:
    query = ('SELECT last("charger_protection_text") AS "charger_protection", last("bms_protection_text") AS '
             f'"bms_protection", last("output_enabled") AS "output_enabled" FROM "slot" WHERE $timeFilter AND {SLOT} '
             'GROUP BY "slot"')
    return table("Protection flags", "Charger and BMS protection flags last reported per slot (D-B.4), and "
                 "whether the slot output relay is on.", [influx(query, table_format=True)], w=12, h=10,
                 sort_by="slot", descending=False,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}])


def cabinet_commands() -> Panel:
    query = f'SELECT {COMMAND_COLUMNS} FROM "command" WHERE $timeFilter AND {CAB} ORDER BY time DESC LIMIT 500'
    return table("Protective actions and commands", "Every command written to this cabinet, who asked "
                 "(rule:<rule>@level<n> or user:<name>), the value and its read-back (P-3.3).",
                 [influx(query, table_format=True)], h=7, overrides=_command_columns())


def cabinet_alerts() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND {CAB} ORDER BY time DESC LIMIT 500'
    return table("Alert history", "Every alert level change of this cabinet with the diagnosis and the "
                 "suggested action (P-5.4.7).", [influx(query, table_format=True)], h=9,
                 overrides=_level_columns() + [link_override("battery", "Battery history", BATTERY_URL)])


def build_cabinet(rules: RuleSet) -> dict[str, Any]:
    variables = [
        influx_variable("site", "Site", 'SHOW TAG VALUES FROM "cabinet" WITH KEY = "site"'),
        influx_variable("cabinet", "Cabinet",
                        'SHOW TAG VALUES FROM "cabinet" WITH KEY = "cabinet" WHERE "site" =~ /^$site$/'),
        influx_variable("slot", "Slot", 'SHOW TAG VALUES FROM "slot" WITH KEY = "slot" WHERE ' + CAB,
                        multi=True, include_all=True, numeric_sort=True),
    ]
    annotations = [
        annotation("Alerts", f'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE '
                             f'$timeFilter AND {CAB}', color="red"),
        annotation("Protective actions", f'SELECT "actor", "command", "value", "ok" FROM "command" WHERE '
                                         f'$timeFilter AND {CAB}', color="blue", text="actor", tags="command,ok"),
    ]
    return dashboard(
        "cascade-cabinet", "Cascade / Cabinet",
        "One cabinet: every slot's pack values, cell spreads, compartment gases, flags, batteries, "
        "protective actions and alert history.",
        [cabinet_status(),
         cabinet_temperature(rules), cabinet_surface_temperature(),
         cabinet_voltage(), cabinet_current(),
         cabinet_soc(), cabinet_soh(),
         cabinet_cell_voltage_spread(), cabinet_cell_temperature_spread(),
         cabinet_h2(rules), cabinet_voc(),
         cabinet_pressure(), cabinet_valve_events(),
         cabinet_environment(), cabinet_power(),
         cabinet_batteries(), cabinet_protection_flags(),
         cabinet_commands(), cabinet_alerts()],
        tags=["cascade", "noc"], variables=variables, annotations=annotations, refresh="10s",
        time_from="now-3h")


# =================================================================================================
# cascade-battery: one pack's history wherever it was (P-6.3)
# =================================================================================================

def _battery_series(title: str, description: str, field: str, unit: str, agg: str = "mean",
                    thresholds: list[dict[str, Any]] | None = None) -> Panel:
    query = (f'SELECT {agg}("{field}") FROM "slot" WHERE $timeFilter AND {BATTERY} '
             'GROUP BY time($__interval) fill(null)')
    return timeseries(title, description, [influx(query, alias=title)], unit=unit, thresholds=thresholds)


def battery_last_seen() -> Panel:
    query = ('SELECT "site", "cabinet", "slot", "battery_state", "soc_pct", "temperature_c", "charge_count" '
             f'FROM "slot" WHERE $timeFilter AND {BATTERY} ORDER BY time DESC LIMIT 1')
    return table("Last seen", "Where the battery was at its most recent reading in the time range "
                 "(its cabinet's position: Cabinet dashboard, P-5.2.1e).", [influx(query, table_format=True)],
                 h=4, overrides=[link_override("cabinet", "Open cabinet", CABINET_URL)])


def battery_charged_where() -> Panel:
    query = ('SELECT count("soc_pct") AS "charging_readings", min("soc_pct") AS "soc_min", max("soc_pct") AS '
             '"soc_max", max("temperature_c") AS "temperature_max" FROM "slot" WHERE $timeFilter AND '
             f'{BATTERY} AND "battery_state" = 1 GROUP BY "site", "cabinet", "slot"')
    return table("Where it was charged", "Every cabinet and slot that charged this battery in the time range "
                 "(battery_state = charging), with the SOC range and peak temperature there.",
                 [influx(query, table_format=True)], h=7,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[link_override("cabinet", "Open cabinet", CABINET_URL),
                            override("temperature_max", unit="celsius")])


def battery_soc() -> Panel:
    return _battery_series("SOC", "State of charge history.", "soc_pct", "percent")


def battery_temperature(rules: RuleSet) -> Panel:
    return _battery_series("Temperature", "Pack temperature history (max per interval).", "temperature_c",
                           "celsius", agg="max", thresholds=threshold_steps(rules, PACK_TEMPERATURE))


def battery_voltage() -> Panel:
    return _battery_series("Voltage", "Pack voltage history.", "voltage_v", "volt")


def battery_current() -> Panel:
    return _battery_series("Charge current", "Charge current history; negative = discharge.", "charge_current_a",
                           "amp")


def battery_charge_count() -> Panel:
    return _battery_series("Charge count", "Cycle count reported by the BMS (second-life use count, P-5.4).",
                           "charge_count", "short", agg="max")


def battery_soh() -> Panel:
    return _battery_series("SOH trend", "State of health reported by the BMS (min per interval).", "soh_pct",
                           "percent", agg="min")


def battery_alerts() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND "battery" = \'$battery\' ORDER BY time DESC'
    return table("Alerts on this battery", "Alert level changes while this battery was in the slot.",
                 [influx(query, table_format=True)], h=7, overrides=_level_columns())


def build_battery(rules: RuleSet) -> dict[str, Any]:
    battery = textbox_variable("battery", "Battery id", description="Battery id as the BMS reports it "
                               "(battery_id is a field, not a tag, so it cannot be listed: type or paste it).")
    return dashboard(
        "cascade-battery", "Cascade / Battery history",
        "History of one battery by id, wherever it was docked (P-6.3): where it charged, SOC, temperature, "
        "voltage, cycles and SOH.",
        [battery_last_seen(), battery_charged_where(),
         battery_soc(), battery_temperature(rules),
         battery_voltage(), battery_current(),
         battery_charge_count(), battery_soh(),
         battery_alerts()],
        tags=["cascade", "noc"], variables=[battery], time_from="now-7d", refresh="")


# =================================================================================================
# cascade-pipeline: health of the stack itself
# =================================================================================================

def _quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
    labels = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [prom(f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[$__rate_interval])))",
                 ref=ref, legend=f"{legend}p{int(q * 100)}")
            for ref, q in (("A", 0.5), ("B", 0.95), ("C", 0.99))]


def pipeline_up() -> Panel:
    return stat("Collector / InfluxDB up", "Prometheus can scrape the collector; the collector's last InfluxDB "
                "write succeeded.",
                [prom('up{job="cascade"}', legend="collector {{instance}}", instant=True),
                 prom("cascade_influx_up", ref="B", legend="influxdb from {{instance}}", instant=True)],
                w=8, h=5, thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
                mappings=[{"type": "value", "options": {"0": {"text": "DOWN", "index": 0},
                                                        "1": {"text": "up", "index": 1}}}])


def pipeline_poll_duration() -> Panel:
    return timeseries("Poll duration", "Quantiles of one device poll (cascade_poll_duration_seconds).",
                      _quantiles("cascade_poll_duration_seconds", "source"), unit="s", w=16, h=5)


def pipeline_polls() -> Panel:
    return timeseries("Polls and readings per second", "Successful polls and slot readings decoded per second.",
                      [prom("sum by (source) (rate(cascade_polls_total[$__rate_interval]))",
                            legend="polls {{source}}"),
                       prom("sum(rate(cascade_readings_total[$__rate_interval]))", ref="B",
                            legend="slot readings")],
                      unit="reqps")


def pipeline_poll_errors() -> Panel:
    return timeseries("Poll errors by kind", "Failed polls per second by source kind and error kind.",
                      [prom("sum by (source, kind) (rate(cascade_poll_errors_total[$__rate_interval]))",
                            legend="{{source}} {{kind}}")], unit="reqps", bars=True)


def pipeline_modbus_requests() -> Panel:
    return timeseries("Modbus requests per second", "Read requests sent to devices by source kind (a Modbus "
                      "poll is several requests; pushed data sends none).",
                      [prom("sum by (source) (rate(cascade_source_requests_total[$__rate_interval]))",
                            legend="{{source}}")],
                      unit="reqps")


def pipeline_decode_errors() -> Panel:
    return timeseries("Decode and encode errors", "Register values rejected while decoding, by field; readings "
                      "that could not be encoded as line protocol.",
                      [prom("sum by (field) (rate(cascade_decode_errors_total[$__rate_interval]))",
                            legend="decode {{field}}"),
                       prom("sum(rate(cascade_line_encode_errors_total[$__rate_interval]))", ref="B",
                            legend="line encode")], unit="reqps", bars=True)


def pipeline_write_batches() -> Panel:
    return timeseries("InfluxDB write batches by result", "ok; error = retried later (spooled); rejected = "
                      "the server refused some lines.",
                      [prom("sum by (result) (rate(cascade_influx_write_batches_total[$__rate_interval]))",
                            legend="{{result}}")], unit="reqps", stack=True)


def pipeline_write_latency() -> Panel:
    return timeseries("InfluxDB write latency", "Quantiles of one write request.",
                      _quantiles("cascade_influx_write_duration_seconds"), unit="s")


def pipeline_spool_depth() -> Panel:
    return timeseries("Spool and buffer depth", "Lines waiting in the disk spool (InfluxDB unreachable) and "
                      "in memory; a spool that keeps growing will drop lines (CascadeSpoolGrowing).",
                      [prom("sum by (instance) (cascade_influx_spool_lines)", legend="spool {{instance}}"),
                       prom("sum by (instance) (cascade_influx_buffer_lines)", ref="B",
                            legend="memory {{instance}}")], unit="short")


def pipeline_lines() -> Panel:
    targets = [prom(f"sum(rate(cascade_influx_lines_{name}_total[$__rate_interval]))", ref=ref, legend=name)
               for ref, name in (("A", "written"), ("B", "spooled"), ("C", "replayed"), ("D", "dropped"),
                                 ("E", "rejected"))]
    return timeseries("Lines written / spooled / replayed / dropped", "Line-protocol lines per second by fate. "
                      "dropped and rejected are lost history.", targets, unit="short",
                      overrides=[override(name, color={"mode": "fixed", "fixedColor": "red"})
                                 for name in ("dropped", "rejected")])


def pipeline_alert_pushes() -> Panel:
    return timeseries("Alertmanager pushes", "Alerts Alertmanager accepted by status, failed push requests, "
                      "changes waiting and dropped.",
                      [prom("sum by (status) (rate(cascade_alert_pushed_total[$__rate_interval]))",
                            legend="pushed {{status}}"),
                       prom("sum(rate(cascade_alert_push_failures_total[$__rate_interval]))", ref="B",
                            legend="failed requests"),
                       prom("sum(cascade_alert_push_pending)", ref="C", legend="pending"),
                       prom("sum(rate(cascade_alert_push_dropped_total[$__rate_interval]))", ref="D",
                            legend="dropped")], unit="short")


def pipeline_alert_transitions() -> Panel:
    return timeseries("Alert transitions", "Alert level changes per second by kind and level shown.",
                      [prom("sum by (kind, level) (rate(cascade_alert_transitions_total[$__rate_interval]))",
                            legend="{{kind}} level {{level}}")], unit="short", bars=True)


def pipeline_notify_deliveries() -> Panel:
    return timeseries("Notifier deliveries by channel and result", "Finished notifications (after retries) "
                      "per second; failed = a person was not told (CascadeNotifyFailing).",
                      [prom("sum by (channel, result) (rate(cascade_notify_deliveries_total[$__rate_interval]))",
                            legend="{{channel}} {{result}}"),
                       prom("sum by (receiver, result) (rate(cascade_notify_webhooks_total[$__rate_interval]))",
                            ref="B", legend="webhook {{receiver}} {{result}}")], unit="short")


def pipeline_notify_latency() -> Panel:
    return timeseries("Notifier delivery time", "Time from Alertmanager webhook to final delivery outcome, by "
                      "channel (retries included).", _quantiles("cascade_notify_delivery_seconds", "channel"),
                      unit="s")


def build_pipeline() -> dict[str, Any]:
    return dashboard(
        "cascade-pipeline", "Cascade / Pipeline health",
        "Health of the collector, the InfluxDB sink, the alert push and the notifier: a broken pipeline "
        "looks exactly like a quiet fleet.",
        [pipeline_up(), pipeline_poll_duration(),
         pipeline_polls(), pipeline_poll_errors(),
         pipeline_modbus_requests(), pipeline_decode_errors(),
         pipeline_write_batches(), pipeline_write_latency(),
         pipeline_spool_depth(), pipeline_lines(),
         pipeline_alert_pushes(), pipeline_alert_transitions(),
         pipeline_notify_deliveries(), pipeline_notify_latency()],
        tags=["cascade", "ops"], time_from="now-3h", refresh="30s")


# =================================================================================================
# cascade-regulator: read-only summaries for regulators
# =================================================================================================

def regulator_cabinets() -> Panel:
    return stat("Cabinets monitored / online", "Cabinets under monitoring and those answering now.",
                [prom("count(cascade_device_up)", legend="monitored", instant=True),
                 prom("sum(cascade_device_up)", ref="B", legend="online", instant=True)], w=6)


def regulator_batteries() -> Panel:
    return stat("Batteries docked / charging", "Batteries in cabinets and batteries charging now.",
                [prom("sum(cascade_cabinet_slots_occupied)", legend="docked", instant=True),
                 prom("sum(cascade_cabinet_slots_charging)", ref="B", legend="charging", instant=True)], w=6)


def regulator_level2() -> Panel:
    return stat("Active level-2 warnings", "Active level-2 (warning) alerts now.",
                [prom('sum(cascade:alerts_active:sum_by_level{level="2"}) or vector(0)', legend="level 2",
                      instant=True)],
                w=6, thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}])


def regulator_level3() -> Panel:
    return stat("Active level-3 alarms", "Active level-3 (critical) alerts now, failed protective actions "
                "included.", [prom("cascade:alerts_active_critical:sum", legend="level 3", instant=True)],
                w=6, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])


def regulator_incident_rate() -> Panel:
    query = ('SELECT count("level") FROM "alert" WHERE $timeFilter AND "level" >= 2 AND '
             '("kind" = \'raise\' OR "kind" = \'escalate\') GROUP BY time($__interval), "severity" fill(null)')
    return timeseries("Incidents over time", "Alerts raised or escalated to level 2 or 3, by severity.",
                      [influx(query, alias="$tag_severity")], unit="short", w=24, h=7, bars=True)


def regulator_incidents() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND "level" >= 2 ORDER BY time DESC LIMIT 1000'
    return table("Incidents (level ≥ 2)", "Every alert raised, escalated or de-escalated to level 2 or 3, "
                 "with the diagnosis and the action taken or advised.", [influx(query, table_format=True)],
                 h=10, overrides=_level_columns())


def regulator_actions() -> Panel:
    query = f'SELECT {COMMAND_COLUMNS} FROM "command" WHERE $timeFilter ORDER BY time DESC LIMIT 1000'
    return table("Protective actions log", "Every protective or operator command, who asked, and the read-back "
                 "proving it took effect (P-3.3).", [influx(query, table_format=True)], h=10,
                 overrides=_command_columns())


def build_regulator() -> dict[str, Any]:
    alerts = annotation("Incidents (level ≥ 2)",
                        'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE $timeFilter AND '
                        '"level" >= 2', color="red")
    return dashboard(
        "cascade-regulator", "Cascade / Regulator view",
        "Read-only fleet summary for regulators: monitoring coverage, active level-2/3 alerts, incidents and "
        "protective actions.",
        [regulator_cabinets(), regulator_batteries(), regulator_level2(), regulator_level3(),
         regulator_incident_rate(), regulator_incidents(), regulator_actions()],
        tags=["cascade", "regulator"], annotations=[alerts], editable=False, time_from="now-7d", refresh="1m")


# =================================================================================================

# Every builder gets the rule catalogue; the pipeline and regulator dashboards draw no value
# thresholds, so they ignore it.
DASHBOARDS: dict[str, Callable[[RuleSet], dict[str, Any]]] = {
    "cascade-fleet": build_fleet,
    "cascade-cabinet": build_cabinet,
    "cascade-battery": build_battery,
    "cascade-pipeline": lambda _rules: build_pipeline(),
    "cascade-regulator": lambda _rules: build_regulator(),
}


def build_all(rules: RuleSet | None = None) -> dict[str, dict[str, Any]]:
    """uid → dashboard model, thresholds from ``rules`` (default: the shipped catalogue).

    Raises InputError naming the catalogue and rule if a panel's rule or level is gone.
    """
    rules = load_rules(DEFAULT_CATALOGUE) if rules is None else rules
    models = {uid: build(rules) for uid, build in DASHBOARDS.items()}
    for uid, model in models.items():
        if model["uid"] != uid:
            raise ValueError(f"dashboard {uid!r} builds uid {model['uid']!r}")
    return models


def render(model: dict[str, Any]) -> str:
    """The file text: sorted keys, two-space indent, trailing newline (small, stable diffs)."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path = DIRECTORY, rules: RuleSet | None = None) -> list[Path]:
    """Write ``<uid>.json`` for every dashboard; returns the paths written."""
    paths = []
    for uid, model in build_all(rules).items():
        path = directory / f"{uid}.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths
