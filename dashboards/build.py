"""The Cascade Grafana dashboards, one function per panel.

``python -m dashboards`` writes ``dashboards/<uid>.json`` for every dashboard in :data:`DASHBOARDS`, in
Simplified Chinese (``--language en`` builds the English set elsewhere); tests/test_dashboards.py checks
the committed files equal :func:`render` of these builders, decodes them with Grafana's own models and
runs every query against a live InfluxDB + Prometheus. Documented in docs/dashboards.md.

Every operator-facing text is given in both languages with :func:`dashboards.i18n.t`; column names
stay the stored field names (queries, overrides and links refer to them) and get a header per
language (:data:`_COLUMNS`).

Value thresholds (the coloured steps and lines on temperature, H2 and CO panels) are not written
here: they are read from the warning catalogue (alerting/catalogue.yaml) when the dashboards are
built, so a panel turns orange exactly where the engine raises level 2. See :func:`threshold_steps`.

Query conventions: InfluxQL uses Grafana's ``$timeFilter`` and ``$__interval`` and groups by
``time($__interval) fill(null)`` so gaps stay gaps; PromQL rates use ``$__rate_interval``. One unit per
axis: a panel whose series have different units puts the second unit on a right-hand axis
(:func:`dashboards.panels.right_axis`) or is split. Error rates are shares (``percentunit``) or counts per
second (``cps``), never ``reqps``. Drill-down links carry ``${__url_time_range}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerting.rules import DEFAULT_CATALOGUE, Level, Rule, RuleSet, load_rules
from core.errors import InputError
from dashboards.health import build_second_life
from dashboards.i18n import DEFAULT_LANGUAGE, language, t
from dashboards.panels import (
    LEVEL_COLOURS,
    LEVEL_STEPS,
    Panel,
    annotation,
    bargauge,
    cascade_links,
    color_cells,
    dashboard,
    detected_mappings,
    geomap,
    influx,
    influx_variable,
    level_mappings,
    link_override,
    map_layer,
    override,
    prom,
    right_axis,
    stat,
    table,
    textbox_variable,
    timeseries,
)

__all__ = ["CONTROL_URL", "DASHBOARDS", "DIRECTORY", "Watched", "build_all", "level_thresholds", "render", "threshold_steps",
           "write_all"]

DIRECTORY = Path(__file__).resolve().parent

# Steps for counts (alerts, failures): any at all is bad. Not warning thresholds, so not catalogue values.
BAD_IF_ANY: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
GREEN: list[dict[str, Any]] = [{"color": "green", "value": None}]

# Drill-down links keep the dashboard's time range (${__url_time_range} = from=...&to=...).
CABINET_URL = ("/d/cascade-cabinet/cascade-cabinet?var-site=${__data.fields.site}"
               "&var-cabinet=${__data.fields.cabinet}&${__url_time_range}")
VEHICLE_URL = ("/d/cascade-vehicle/cascade-vehicle?var-fleet=${__data.fields.fleet}&var-vehicle=${__value.raw}"
               "&${__url_time_range}")
BATTERY_URL = "/d/cascade-battery/cascade-battery?var-battery=${__value.raw}&${__url_time_range}"
# The alert service's control page (alerting/control.py) for the cabinet shown. The service is not Grafana:
# its address is the dashboard variable ``control_url`` (default: the collector's port on the compose host).
CONTROL_URL = "http://127.0.0.1:9108"
CONTROL_PAGE_URL = "${control_url}/control?cabinet=${cabinet:percentencode}"

# Template-variable filters.
FLEET_SITE = '"site" =~ /^$site$/'
PROM_SITE = 'site=~"$site"'
CAB = '"site" =~ /^$site$/ AND "cabinet" =~ /^$cabinet$/'
SLOT = CAB + ' AND "slot" =~ /^$slot$/'
BATTERY = "\"battery_id\" = '$battery'"
FLEET = '"fleet" =~ /^$fleet$/'

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
    """``1级 ≥ 45 °C，2级 ≥ 55 °C，3级 ≥ 70 °C`` / ``level 1 ≥ 45 °C, ...`` for panel descriptions."""
    levels = _panel_levels(rules, watched)
    parts = [(n, _RISING[levels[n].compare], f"{levels[n].threshold:g}") for n in LEVEL_COLOURS]
    return t("，".join(f"{n}级 {op} {value} {watched.unit}" for n, op, value in parts),
             ", ".join(f"level {n} {op} {value} {watched.unit}" for n, op, value in parts))


def _thresholds_slashed(rules: RuleSet, watched: Watched) -> str:
    """``30/100/400`` (levels 1/2/3) for panel descriptions."""
    thresholds = level_thresholds(rules, watched)
    return "/".join(f"{thresholds[n]:g}" for n in LEVEL_COLOURS)


# Column headers of the tables, by stored column name: (Chinese, English).
_COLUMNS = {
    "Time": ("时间", "Time"), "site": ("站点", "Site"), "cabinet": ("换电柜", "Cabinet"), "slot": ("仓位", "Slot"),
    "instance": ("采集实例", "Instance"), "model": ("型号", "Model"),
    "rule": ("规则", "Rule"), "severity": ("严重程度", "Severity"), "kind": ("变化", "Change"),
    "level": ("告警等级", "Level"), "from_level": ("原等级", "From level"),
    "worst_level": ("最高告警等级", "Worst level"), "value": ("数值", "Value"),
    "battery": ("电池编号", "Battery id"), "battery_id": ("电池编号", "Battery id"),
    "summary": ("摘要", "Summary"), "diagnosis": ("诊断", "Diagnosis"), "action": ("处置建议", "Action"),
    "command": ("命令", "Command"), "actor": ("发起方", "Requested by"), "readback": ("回读值", "Read-back"),
    "ok": ("结果", "Result"), "error": ("错误", "Error"), "duration_s": ("耗时", "Duration"),
    "smoke": ("烟雾", "Smoke"), "flame": ("火焰", "Flame"), "water": ("水浸", "Water"),
    "latitude": ("纬度", "Latitude"), "longitude": ("经度", "Longitude"),
    "distribution_state": ("配电状态", "Distribution state"), "device_fault_code": ("设备故障码", "Device fault code"),
    "emergency_state": ("紧急状态", "Emergency state"), "suppression": ("灭火装置", "Fire suppression"),
    "maker": ("电池厂家", "Maker"), "chemistry": ("电池类型", "Chemistry"), "state": ("状态", "State"),
    "soc": ("SOC", "SOC"), "cycles": ("循环次数", "Cycles"),
    "charger_protection": ("充电机保护", "Charger protection"), "bms_protection": ("BMS 保护", "BMS protection"),
    "output_enabled": ("仓位输出", "Output on"),
    "battery_state": ("电池状态", "Battery state"), "soc_pct": ("SOC", "SOC"), "temperature_c": ("温度", "Temperature"),
    "charge_count": ("循环次数", "Cycles"),
    "charging_readings": ("充电读数", "Charging readings"), "soc_min": ("最低 SOC", "SOC min"),
    "soc_max": ("最高 SOC", "SOC max"), "temperature_max": ("最高温度", "Temperature max"),
    "fleet": ("车队", "Fleet"), "vehicle": ("车辆", "Vehicle"), "temperature": ("电池温度", "Battery temperature"),
}


def _labels(*columns: str) -> dict[str, str]:
    """Headers of ``columns`` in the language being built."""
    return {name: t(*_COLUMNS[name]) for name in columns}


ALERT_LABELS = ("Time", "site", "cabinet", "slot", "rule", "severity", "kind", "level", "from_level", "value",
                "battery", "summary", "diagnosis", "action")
COMMAND_LABELS = ("Time", "site", "cabinet", "slot", "command", "actor", "value", "readback", "ok", "error",
                  "duration_s")


def _level_columns() -> list[dict[str, Any]]:
    return [color_cells(name, mappings=level_mappings(), thresholds={"mode": "absolute", "steps": LEVEL_STEPS})
            for name in ("level", "from_level", "worst_level")]


def _command_columns() -> list[dict[str, Any]]:
    ok = [{"type": "value", "options": {"true": {"text": t("成功", "OK"), "color": "green", "index": 0},
                                        "false": {"text": t("失败", "FAILED"), "color": "red", "index": 1}}}]
    return [color_cells("ok", mappings=ok), override("duration_s", unit="s")]


def _open_cabinet() -> dict[str, Any]:
    return link_override("cabinet", t("打开换电柜", "Open cabinet"), CABINET_URL)


def _battery_history(field: str) -> dict[str, Any]:
    return link_override(field, t("电池履历", "Battery history"), BATTERY_URL)


# =================================================================================================
# cascade-fleet: NOC overview
# =================================================================================================

def fleet_devices_online() -> Panel:
    return stat(t("换电柜在线 / 离线", "Cabinets online / offline"),
                t("最近一次轮询成功（cascade_device_up = 1）与失败的换电柜数量。",
                  "Cabinets whose last poll succeeded (cascade_device_up = 1) and those that failed."),
                [prom(f"sum(cascade_device_up{{{PROM_SITE}}})", legend=t("在线", "online"), instant=True),
                 prom(f"count(cascade_device_up{{{PROM_SITE}}} == 0) or vector(0)", ref="B",
                      legend=t("离线", "offline"), instant=True)],
                unit="none", w=6, h=5)


def fleet_alerts_by_level() -> Panel:
    return stat(t("按等级统计的活动告警", "Active alerts by level"),
                t("各等级当前活动的安全告警数（记录规则 cascade:alerts_active:sum_by_level），保护动作失败计入 3 级。",
                  "Active safety alerts per level (recording rule cascade:alerts_active:sum_by_level), "
                  "failed protective actions included at level 3."),
                [prom("cascade:alerts_active:sum_by_level", legend=t("{{level}}级", "level {{level}}"),
                      instant=True)],
                unit="none", w=8, h=5, thresholds=BAD_IF_ANY)


def fleet_offline_cabinets() -> Panel:
    return table(t("离线换电柜", "Offline cabinets"),
                 t("最近一次轮询失败的换电柜；柜内电池处于无人监测状态。",
                   "Cabinets whose last poll failed; their batteries are unmonitored."),
                 [prom(f"cascade_device_up{{{PROM_SITE}}} == 0", instant=True, table_format=True)],
                 w=10, h=5,
                 transformations=[{"id": "organize", "options": {
                     "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                     "indexByName": {"site": 0, "cabinet": 1, "instance": 2}, "renameByName": {}}}],
                 overrides=[_open_cabinet()], labels=_labels("site", "cabinet", "instance"))


def fleet_hottest_battery(rules: RuleSet) -> Panel:
    # The gauge is the max over slots of hottest_temperature_c (exporters/prometheus.py), which is
    # what over_temperature reads; a sensor at its limit shows the limit ("at least").
    return bargauge(t("各换电柜最高电池温度", "Hottest battery per cabinet"),
                    t("各换电柜最近一次轮询中最高的电池温度（电池包、电芯或表面传感器），由高到低。"
                      f"颜色：{_levels_text(rules, PACK_TEMPERATURE)}（{PACK_TEMPERATURE.rule}）。",
                      "Highest battery temperature (pack, cell or surface sensor) in each cabinet at its last "
                      "poll, hottest first. "
                      f"Colours: {_levels_text(rules, PACK_TEMPERATURE)} ({PACK_TEMPERATURE.rule})."),
                    [prom(f"sort_desc(cascade_cabinet_battery_temperature_max_celsius{{{PROM_SITE}}})",
                          legend="{{site}}/{{cabinet}}", instant=True)],
                    unit="celsius", thresholds=threshold_steps(rules, PACK_TEMPERATURE))


def fleet_h2_max(rules: RuleSet) -> Panel:
    return bargauge(t("各换电柜最高 H2 / 特征气体", "Max H2 / off-gas per cabinet"),
                    t("各换电柜仓内 H2/特征气体的最高读数（P-5.2.2.2 a），由高到低。"
                      f"颜色：{H2.rule} 1/2/3级阈值 {_thresholds_slashed(rules, H2)} ppm（高于本柜其他仓位）。",
                      "Highest compartment H2/off-gas reading in each cabinet (P-5.2.2.2 a), highest first. "
                      f"Colours: {H2.rule} levels 1/2/3 at {_thresholds_slashed(rules, H2)} {H2.unit}."),
                    [prom(f"sort_desc(cascade_cabinet_h2_max_ppm{{{PROM_SITE}}})", legend="{{site}}/{{cabinet}}",
                          instant=True)],
                    unit="ppm", thresholds=threshold_steps(rules, H2))


def fleet_co(rules: RuleSet) -> Panel:
    return timeseries(t("各换电柜 CO 浓度", "CO per cabinet"),
                      t(f"各换电柜柜内 CO 浓度（P-5.2.2.3）；横线为 {CO.rule} 1/2/3级阈值"
                        f"（{_thresholds_slashed(rules, CO)} {CO.unit}）。",
                        "CO concentration inside each cabinet (P-5.2.2.3); lines at the "
                        f"{CO.rule} levels 1/2/3 ({_thresholds_slashed(rules, CO)} {CO.unit})."),
                      [prom(f"cascade_cabinet_co_ppm{{{PROM_SITE}}}", legend="{{site}}/{{cabinet}}")],
                      unit="ppm", thresholds=threshold_steps(rules, CO), axis_label="CO")


def fleet_hazard_states() -> Panel:
    expr = "cascade_cabinet_{}_detected{{" + PROM_SITE + "}}"
    targets = [prom(expr.format(kind), ref=ref, instant=True, table_format=True)
               for ref, kind in (("A", "smoke"), ("B", "flame"), ("C", "water"))]
    return table(t("烟雾 / 火焰 / 水浸", "Smoke / flame / water"),
                 t("各换电柜最近一次轮询时的探测器状态（P-5.2.2.3、P-5.2.1d）。任一“检测到”即为 3 级告警"
                   "（cabinet_smoke、cabinet_flame、cabinet_water）。",
                   "Detector state of every cabinet at its last poll (P-5.2.2.3, P-5.2.1d). Any DETECTED is a "
                   "level-3 alert (cabinet_smoke, cabinet_flame, cabinet_water)."),
                 targets, w=12, h=8,
                 sort_by="flame",
                 transformations=[
                     {"id": "merge", "options": {}},
                     {"id": "organize", "options": {
                         "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                         "indexByName": {"site": 0, "cabinet": 1, "Value #A": 2, "Value #B": 3, "Value #C": 4},
                         "renameByName": {"Value #A": "smoke", "Value #B": "flame", "Value #C": "water"}}}],
                 overrides=[color_cells(name, mappings=detected_mappings()) for name in ("smoke", "flame", "water")]
                 + [_open_cabinet()], labels=_labels("site", "cabinet", "smoke", "flame", "water"))


def fleet_slots() -> Panel:
    return timeseries(t("在仓 / 充电中仓位", "Slots charging / occupied"),
                      t("全网在仓与正在充电的电池数；充电机或 BMS 保护标志置位的仓位数。",
                        "Batteries docked and charging across the fleet; slots with a charger or BMS protection "
                        "flag set."),
                      [prom(f"sum(cascade_cabinet_slots_occupied{{{PROM_SITE}}})", legend=t("在仓", "occupied")),
                       prom(f"sum(cascade_cabinet_slots_charging{{{PROM_SITE}}})", ref="B",
                            legend=t("充电中", "charging")),
                       prom(f"sum(cascade_cabinet_slots_protection_active{{{PROM_SITE}}})", ref="C",
                            legend=t("保护中", "protection active"))],
                      unit="none", axis_label=t("仓位数", "slots"))


def fleet_input_power() -> Panel:
    return timeseries(t("换电柜输入功率", "Cabinet input power"),
                      t("按站点堆叠的输入功率（P-5.1.1.1）。", "Input power per site, stacked (P-5.1.1.1)."),
                      [prom(f"sum by (site) (cascade_cabinet_input_power_watts{{{PROM_SITE}}})", legend="{{site}}")],
                      unit="watt", stack=True, axis_label=t("功率", "power"))


def fleet_worst_level() -> Panel:
    return table(t("按最高告警等级排列的换电柜", "Cabinets by worst alert level"),
                 t("有活动告警的换电柜，最严重的在前：取自告警服务的汇总指标 cascade_cabinet_alert_level"
                   "（电池 → 仓位 → 换电柜；0 = 无），所以时间范围开始前触发的告警也会显示。",
                   "Cabinets with an active alert, worst first: the alert service's roll-up gauge "
                   "cascade_cabinet_alert_level (battery -> slot -> cabinet; 0 = none), so an alert raised "
                   "before the start of the time range still shows."),
                 [prom(f"sort_desc(cascade_cabinet_alert_level{{{PROM_SITE}}} > 0)", instant=True,
                       table_format=True)], w=12, h=8, sort_by="worst_level",
                 transformations=[{"id": "organize", "options": {
                     "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                     "indexByName": {"site": 0, "cabinet": 1, "Value": 2},
                     "renameByName": {"Value": "worst_level"}}}],
                 overrides=_level_columns() + [_open_cabinet()], labels=_labels("site", "cabinet", "worst_level"))


def fleet_poll_errors() -> Panel:
    return timeseries(t("轮询失败率（按原因）", "Poll failure share by kind"),
                      t("失败的 Modbus 轮询占全部轮询的比例，按错误原因（连接、超时、Modbus 异常……）。",
                        "Share of Modbus polls that failed, by error kind (connect, timeout, modbus exception...)."),
                      [prom("sum by (kind) (rate(cascade_poll_errors_total[$__rate_interval])) / scalar("
                            "sum(rate(cascade_polls_total[$__rate_interval])) + "
                            "sum(rate(cascade_poll_errors_total[$__rate_interval])))", legend="{{kind}}")],
                      unit="percentunit", bars=True, axis_label=t("失败占比", "failed share"))


def fleet_decode_errors() -> Panel:
    return timeseries(t("解码错误（按字段）", "Decode errors by field"),
                      t("每秒被判为无效而丢弃的寄存器值，按配置字段；该字段不写入存储点。",
                        "Register values rejected as garbage per second, by profile field; the field is absent "
                        "from the stored point."),
                      [prom("sum by (field) (rate(cascade_decode_errors_total[$__rate_interval]))",
                            legend="{{field}}")],
                      unit="cps", bars=True, axis_label=t("个/秒", "values/s"))


def fleet_locations() -> Panel:
    query = ('SELECT last("latitude_deg") AS "latitude", last("longitude_deg") AS "longitude" FROM "cabinet" '
             'WHERE $timeFilter AND ' + FLEET_SITE + ' GROUP BY "site", "cabinet"')
    return table(t("换电柜位置", "Cabinet locations"),
                 t("各换电柜上报的位置（P-5.2.1e、D-B.1）；在仓电池的位置即其换电柜的位置。",
                   "Reported position of each cabinet (P-5.2.1e, D-B.1); a docked battery is where its "
                   "cabinet is."), [influx(query, table_format=True)], w=12, h=8,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[_open_cabinet()], labels=_labels("site", "cabinet", "latitude", "longitude"))


# Where every cabinet and vehicle is, coloured by its worst active alert: the level of each alert is the
# last level it changed to (0 once cleared), the worst per cabinet or vehicle (a vehicle's alerts carry
# the vehicle id as cabinet). Vehicle rows are renamed to site/cabinet so one merged table holds both.
_ACTIVE_LEVEL = ('SELECT max("lvl") AS "level" FROM (SELECT last("level") AS "lvl" FROM "alert" WHERE $timeFilter '
                 'GROUP BY "site", "cabinet", "slot", "rule") GROUP BY "site", "cabinet"')


def fleet_map() -> Panel:
    cabinets = ('SELECT last("latitude_deg") AS "latitude", last("longitude_deg") AS "longitude" FROM "cabinet" '
                'WHERE $timeFilter AND ' + FLEET_SITE + ' GROUP BY "site", "cabinet"')
    vehicles = ('SELECT last("latitude_deg") AS "latitude", last("longitude_deg") AS "longitude" FROM "vehicle" '
                'WHERE $timeFilter GROUP BY "fleet", "vehicle"')
    return geomap(t("换电柜与车辆地图（按告警等级着色）", "Cabinets and vehicles by warning level"),
                  t("每个换电柜与每辆车在时间范围内最近上报的位置，按其当前最高告警等级着色（绿色无告警，1 级黄、2 级橙、"
                    "3 级红）；等级取时间范围内每条告警最后一次变化后的等级。",
                    "Last reported position of every cabinet and vehicle in the time range, coloured by its worst "
                    "active alert (green none, level 1 yellow, 2 orange, 3 red); an alert's level is the level of "
                    "its last change in the time range."),
                  [influx(cabinets, table_format=True), influx(vehicles, ref="B", table_format=True),
                   influx(_ACTIVE_LEVEL, ref="C", table_format=True)],
                  [map_layer("markers", t("换电柜与车辆", "Cabinets and vehicles"), color_field="level", size=8)],
                  thresholds=LEVEL_STEPS, h=12,
                  transformations=[
                      {"id": "organize", "filter": {"id": "byRefId", "options": "B"},
                       "options": {"excludeByName": {}, "indexByName": {},
                                   "renameByName": {"fleet": "site", "vehicle": "cabinet"}}},
                      {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": {},
                                                     "renameByName": {}}},
                      {"id": "merge", "options": {}},
                      {"id": "filterByValue", "options": {"type": "exclude", "match": "any", "filters": [
                          {"fieldName": "latitude", "config": {"id": "isNull", "options": {}}}]}}])


def build_fleet(rules: RuleSet) -> dict[str, Any]:
    site = influx_variable("site", t("站点", "Site"), 'SHOW TAG VALUES FROM "cabinet" WITH KEY = "site"', multi=True,
                           include_all=True, all_value=".*")
    alerts = annotation(t("告警（2级及以上）", "Alerts (level ≥ 2)"),
                        'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE $timeFilter AND '
                        + FLEET_SITE + ' AND ("level" >= 2 OR "from_level" >= 2)', color="red")
    return dashboard(
        "cascade-fleet", t("Cascade / 全网总览", "Cascade / Fleet overview"),
        t("NOC 全网换电柜总览：在线情况、活动告警、温度、气体、探测器、功率。",
          "NOC overview of every cabinet: connectivity, active alerts, temperatures, gases, detectors, power."),
        [fleet_devices_online(), fleet_alerts_by_level(), fleet_offline_cabinets(),
         fleet_worst_level(), fleet_hazard_states(),
         fleet_hottest_battery(rules), fleet_h2_max(rules),
         fleet_co(rules), fleet_slots(),
         fleet_input_power(), fleet_locations(),
         fleet_poll_errors(), fleet_decode_errors(), fleet_map()],
        tags=["cascade", "noc"], variables=[site], annotations=[alerts], refresh="10s", time_from="now-3h")


# =================================================================================================
# cascade-cabinet: drill-down to one cabinet and its slots
# =================================================================================================

def _slot_series(title: str, description: str, field: str, unit: str, *, agg: str = "mean",
                 thresholds: list[dict[str, Any]] | None = None, axis_label: str = "") -> Panel:
    query = (f'SELECT {agg}("{field}") FROM "slot" WHERE $timeFilter AND {SLOT} '
             'GROUP BY time($__interval), "slot" fill(null)')
    return timeseries(title, description, [influx(query, alias=t("仓位 $tag_slot", "slot $tag_slot"))], unit=unit,
                      thresholds=thresholds, axis_label=axis_label)


def cabinet_temperature(rules: RuleSet) -> Panel:
    return _slot_series(t("电池包温度", "Pack temperature"), t("各仓位 BMS 上报的电池包温度（D-B.3）。",
                                                          "BMS pack temperature per slot (D-B.3)."),
                        "temperature_c", "celsius", agg="max", thresholds=threshold_steps(rules, PACK_TEMPERATURE),
                        axis_label=t("温度", "temperature"))


def cabinet_surface_temperature() -> Panel:
    return _slot_series(t("电池表面温度", "Surface temperature"),
                        t("各仓位电池表面温度（P-5.2.2.3）。", "Battery surface temperature per slot (P-5.2.2.3)."),
                        "surface_temperature_c", "celsius", agg="max", axis_label=t("温度", "temperature"))


def cabinet_voltage() -> Panel:
    return _slot_series(t("电池包电压", "Pack voltage"), t("各仓位电池包电压。", "Pack voltage per slot."),
                        "voltage_v", "volt", axis_label=t("电压", "voltage"))


def cabinet_current() -> Panel:
    return _slot_series(t("充电电流", "Charge current"), t("各仓位充电电流；负值为放电。",
                                                       "Charge current per slot; negative = discharge."),
                        "charge_current_a", "amp", axis_label=t("电流", "current"))


def cabinet_soc() -> Panel:
    return _slot_series(t("荷电状态 SOC", "State of charge"), t("各仓位 SOC。", "SOC per slot."), "soc_pct",
                        "percent", axis_label="SOC")


def cabinet_soh() -> Panel:
    return _slot_series(t("健康状态 SOH", "State of health"), t("各仓位 SOH（梯次利用电池）。",
                                                           "SOH per slot (second-life packs)."),
                        "soh_pct", "percent", agg="min", axis_label="SOH")


def cabinet_cell_voltage_spread() -> Panel:
    query = ('SELECT (max("cell_voltage_max_v") - min("cell_voltage_min_v")) * 1000 AS "spread" FROM "slot" '
             f'WHERE $timeFilter AND {SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries(t("单体电压极差", "Cell voltage spread"),
                      t("各仓位最高与最低单体电压之差（每个时间段内最差值）；极差持续增大说明电芯不均衡或失效。",
                        "Highest minus lowest cell voltage per slot (worst in each interval); a growing spread is "
                        "an imbalanced or failing cell."),
                      [influx(query, alias=t("仓位 $tag_slot", "slot $tag_slot"))], unit="mvolt",
                      axis_label=t("压差", "spread"))


def cabinet_cell_temperature_spread() -> Panel:
    query = ('SELECT max("cell_temperature_max_c") - min("cell_temperature_min_c") AS "spread" FROM "slot" '
             f'WHERE $timeFilter AND {SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries(t("单体温差", "Cell temperature spread"),
                      t("各仓位最热与最冷电芯的温差（每个时间段内最差值）。",
                        "Hottest minus coldest cell per slot (worst in each interval)."),
                      [influx(query, alias=t("仓位 $tag_slot", "slot $tag_slot"))], unit="celsius",
                      axis_label=t("温差", "spread"))


def cabinet_h2(rules: RuleSet) -> Panel:
    return _slot_series(t("H2 / 特征气体", "H2 / off-gas"),
                        t(f"各仓位 H2/特征气体浓度（P-5.2.2.2 a）；横线为 {H2.rule} 各级阈值。",
                          f"Compartment H2/off-gas per slot (P-5.2.2.2 a); lines at the {H2.rule} levels."),
                        "h2_ppm", "ppm", agg="max", thresholds=threshold_steps(rules, H2), axis_label="H2")


def cabinet_voc() -> Panel:
    return _slot_series(t("VOC（电解液蒸气）", "VOC (electrolyte vapour)"),
                        t("各仓位 VOC 浓度（P-5.2.2.2 c）。", "Compartment VOC per slot (P-5.2.2.2 c)."),
                        "voc_ppm", "ppm", agg="max", axis_label="VOC")


def cabinet_pressure() -> Panel:
    return _slot_series(t("模组压力", "Module pressure"),
                        t("各仓位模组压力（P-5.2.2.2 d）。", "Module pressure per slot (P-5.2.2.2 d)."),
                        "module_pressure_kpa", "pressurekpa", agg="max", axis_label=t("压力", "pressure"))


def cabinet_valve_events() -> Panel:
    query = ('SELECT non_negative_difference(max("valve_acoustic_events")) FROM "slot" WHERE $timeFilter AND '
             f'{SLOT} GROUP BY time($__interval), "slot" fill(null)')
    return timeseries(t("泄压阀动作", "Valve events"),
                      t("每个时间段各仓位新增的泄压阀声学事件（P-5.2.2.2 b；寄存器为累计计数）。",
                        "New acoustic safety-valve events per interval and slot "
                        "(P-5.2.2.2 b; the register is a cumulative count)."),
                      [influx(query, alias=t("仓位 $tag_slot", "slot $tag_slot"))], unit="none", bars=True,
                      axis_label=t("次数", "events"))


def cabinet_environment() -> Panel:
    # °C and ppm: the temperature on the left axis, the gases on a right-hand ppm axis.
    temperature = ('SELECT mean("cabinet_temperature_c") FROM "cabinet" WHERE $timeFilter AND ' + CAB +
                   ' GROUP BY time($__interval) fill(null)')
    gases = ('SELECT max("co_ppm") AS "CO", max("co2_ppm") AS "CO2" FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY time($__interval) fill(null)')
    return timeseries(t("柜内温度与 CO、CO2", "Cabinet temperature, CO, CO2"),
                      t("柜内传感器（P-5.2.2.3）：温度在左轴（°C），CO 与 CO2 在右轴（ppm）。",
                        "Sensors inside the cabinet (P-5.2.2.3): temperature on the left axis (°C), CO and CO2 on "
                        "the right (ppm)."),
                      [influx(temperature, alias=t("柜内温度", "cabinet temperature")),
                       influx(gases, ref="B", alias="$col")],
                      unit="celsius", w=8, axis_label=t("温度", "temperature"),
                      overrides=[right_axis("B", "ppm", t("气体浓度", "gas"))])


def cabinet_input_voltage() -> Panel:
    query = ('SELECT mean("input_voltage_v") FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY time($__interval) fill(null)')
    return timeseries(t("输入电压", "Input voltage"), t("换电柜输入电压（P-5.1.1.1）。",
                                                    "Cabinet input voltage (P-5.1.1.1)."),
                      [influx(query, alias=t("输入电压", "input voltage"))], unit="volt", w=8,
                      axis_label=t("电压", "voltage"))


def cabinet_input_power() -> Panel:
    # A and kW: current on the left axis, power on a right-hand kW axis.
    current = ('SELECT mean("input_current_a") FROM "cabinet" WHERE $timeFilter AND ' + CAB +
               ' GROUP BY time($__interval) fill(null)')
    power = ('SELECT mean("input_power_w") / 1000 FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY time($__interval) fill(null)')
    return timeseries(t("输入电流与功率", "Input current and power"),
                      t("换电柜输入电流在左轴（A），输入功率在右轴（kW）（P-5.1.1.1）。",
                        "Cabinet input current on the left axis (A), input power on the right (kW) (P-5.1.1.1)."),
                      [influx(current, alias=t("输入电流", "input current")),
                       influx(power, ref="B", alias=t("输入功率", "input power"))],
                      unit="amp", w=8, axis_label=t("电流", "current"),
                      overrides=[right_axis("B", "kwatt", t("功率", "power"))])


def cabinet_status() -> Panel:
    query = ('SELECT last("distribution_state") AS "distribution_state", last("device_fault_code") AS '
             '"device_fault_code", last("emergency_state_text") AS "emergency_state", last("flame_detected") AS '
             '"flame", last("smoke_detected") AS "smoke", last("water_detected") AS "water", '
             'last("fire_suppression_type") AS "suppression", last("latitude_deg") AS "latitude", '
             'last("longitude_deg") AS "longitude" FROM "cabinet" WHERE $timeFilter AND ' + CAB +
             ' GROUP BY "model"')
    return table(t("换电柜状态", "Cabinet status"),
                 t("最近的配电状态（bit 0 市电，bit 1 断路器）、设备故障码、紧急状态、探测器、灭火装置与位置"
                   "（P-5.1.1.1、D-B.1、D-B.4、P-5.2.1e）。",
                   "Last distribution state (bit 0 mains, bit 1 breaker), device fault code, emergency state, "
                   "detectors, fire suppression and position (P-5.1.1.1, D-B.1, D-B.4, P-5.2.1e)."),
                 [influx(query, table_format=True)], h=5,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 labels=_labels("model", "distribution_state", "device_fault_code", "emergency_state", "flame",
                                "smoke", "water", "suppression", "latitude", "longitude"))


def _battery_states() -> list[dict[str, Any]]:
    texts = (t("空仓", "empty"), t("充电中", "charging"), t("已充满", "full"), t("放电中", "discharging"),
             t("故障", "fault"), t("空闲", "idle"))
    return [{"type": "value", "options": {str(value): {"text": text, "index": value}
                                          for value, text in enumerate(texts)}}]


def cabinet_batteries() -> Panel:
    query = ('SELECT last("battery_id") AS "battery_id", last("battery_maker") AS "maker", last("chemistry") AS '
             '"chemistry", last("battery_state") AS "state", last("soc_pct") AS "soc", last("charge_count") AS '
             f'"cycles" FROM "slot" WHERE $timeFilter AND {SLOT} GROUP BY "slot"')
    chemistries = (t("未知", "unknown"), t("磷酸铁锂", "LFP"), t("三元锂", "NMC"), t("锰酸锂", "LMO"),
                   t("钠离子", "Na-ion"))
    chemistry = [{"type": "value", "options": {str(value): {"text": text, "index": value}
                                               for value, text in enumerate(chemistries)}}]
    return table(t("仓内电池", "Batteries in the slots"),
                 t("各仓位最近上报的电池编号、厂家、类型、状态、SOC 与循环次数；点击编号查看电池履历（P-6.3）。",
                   "Battery id, maker, chemistry, state, SOC and cycle count last reported per slot; click an id "
                   "for its history (P-6.3)."), [influx(query, table_format=True)],
                 w=12, h=10, sort_by="slot", descending=False,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[_battery_history("battery_id"),
                            override("state", mappings=_battery_states()), override("chemistry", mappings=chemistry),
                            override("soc", unit="percent"), override("slot", unit="none")],
                 labels=_labels("slot", "battery_id", "maker", "chemistry", "state", "soc", "cycles"))


def cabinet_protection_flags() -> Panel:
    query = ('SELECT last("charger_protection_text") AS "charger_protection", last("bms_protection_text") AS '
             f'"bms_protection", last("output_enabled") AS "output_enabled" FROM "slot" WHERE $timeFilter AND {SLOT} '
             'GROUP BY "slot"')
    return table(t("保护标志", "Protection flags"),
                 t("各仓位最近上报的充电机与 BMS 保护标志（D-B.4），以及仓位输出继电器是否闭合。",
                   "Charger and BMS protection flags last reported per slot (D-B.4), and whether the slot output "
                   "relay is on."), [influx(query, table_format=True)], w=12, h=10,
                 sort_by="slot", descending=False,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 labels=_labels("slot", "charger_protection", "bms_protection", "output_enabled"))


def cabinet_commands() -> Panel:
    query = f'SELECT {COMMAND_COLUMNS} FROM "command" WHERE $timeFilter AND {CAB} ORDER BY time DESC LIMIT 500'
    return table(t("保护动作与命令", "Protective actions and commands"),
                 t("写入本换电柜的每条命令、发起方（rule:<规则>@level<n> 或 user:<用户名>）、写入值及回读结果（P-3.3）。",
                   "Every command written to this cabinet, who asked (rule:<rule>@level<n> or user:<name>), the "
                   "value and its read-back (P-3.3)."),
                 [influx(query, table_format=True)], h=7, overrides=_command_columns(),
                 labels=_labels(*COMMAND_LABELS), links=[_control_link()])


def cabinet_alerts() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND {CAB} ORDER BY time DESC LIMIT 500'
    return table(t("告警历史", "Alert history"),
                 t("本换电柜每次告警等级变化，附诊断与处置建议（P-5.4.7）。",
                   "Every alert level change of this cabinet with the diagnosis and the suggested action (P-5.4.7)."),
                 [influx(query, table_format=True)], h=9,
                 overrides=_level_columns() + [_battery_history("battery")], labels=_labels(*ALERT_LABELS))


def _control_link() -> dict[str, Any]:
    """The cabinet's remote control (start/stop charging, fault reset, limits) on the alert service's
    control page, in the dashboard's language; the page asks for the operator's token."""
    return {"title": t("远程控制本柜", "Control this cabinet"), "type": "link",
            "url": CONTROL_PAGE_URL + t("", "&lang=en"), "targetBlank": True, "icon": "bolt",
            "tooltip": t("在告警服务的控制页面启停充电、故障复位（需要操作员或工程师令牌）",
                         "Start or stop charging, reset faults on the alert service's control page (operator or "
                         "engineer token)"),
            "tags": [], "asDropdown": False, "includeVars": False, "keepTime": False}


def build_cabinet(rules: RuleSet) -> dict[str, Any]:
    variables = [
        influx_variable("site", t("站点", "Site"), 'SHOW TAG VALUES FROM "cabinet" WITH KEY = "site"'),
        influx_variable("cabinet", t("换电柜", "Cabinet"),
                        'SHOW TAG VALUES FROM "cabinet" WITH KEY = "cabinet" WHERE "site" =~ /^$site$/'),
        influx_variable("slot", t("仓位", "Slot"), 'SHOW TAG VALUES FROM "slot" WITH KEY = "slot" WHERE ' + CAB,
                        multi=True, include_all=True, numeric_sort=True),
        textbox_variable("control_url", t("告警服务地址", "Alert service URL"), CONTROL_URL,
                         t("远程控制链接打开的告警服务地址（生产环境为其 TLS 代理地址）",
                           "Where the control links open the alert service (in production, its TLS proxy)")),
    ]
    annotations = [
        annotation(t("告警", "Alerts"), f'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE '
                                       f'$timeFilter AND {CAB}', color="red"),
        annotation(t("保护动作", "Protective actions"),
                   f'SELECT "actor", "command", "value", "ok" FROM "command" WHERE $timeFilter AND {CAB}',
                   color="blue", text="actor", tags="command,ok"),
    ]
    return dashboard(
        "cascade-cabinet", t("Cascade / 换电柜", "Cascade / Cabinet"),
        t("单个换电柜：各仓位电池包数值、单体极差、仓内气体、保护标志、电池、保护动作与告警历史。",
          "One cabinet: every slot's pack values, cell spreads, compartment gases, flags, batteries, "
          "protective actions and alert history."),
        [cabinet_status(),
         cabinet_temperature(rules), cabinet_surface_temperature(),
         cabinet_voltage(), cabinet_current(),
         cabinet_soc(), cabinet_soh(),
         cabinet_cell_voltage_spread(), cabinet_cell_temperature_spread(),
         cabinet_h2(rules), cabinet_voc(),
         cabinet_pressure(), cabinet_valve_events(),
         cabinet_environment(), cabinet_input_voltage(), cabinet_input_power(),
         cabinet_batteries(), cabinet_protection_flags(),
         cabinet_commands(), cabinet_alerts()],
        tags=["cascade", "noc"], variables=variables, annotations=annotations, refresh="10s",
        time_from="now-3h", links=[*cascade_links(), _control_link()])


# =================================================================================================
# cascade-battery: one pack's history wherever it was (P-6.3)
# =================================================================================================

def _battery_series(title: str, description: str, field: str, unit: str, agg: str = "mean",
                    thresholds: list[dict[str, Any]] | None = None) -> Panel:
    query = (f'SELECT {agg}("{field}") FROM "slot" WHERE $timeFilter AND {BATTERY} '
             'GROUP BY time($__interval) fill(null)')
    return timeseries(title, description, [influx(query, alias=title)], unit=unit, thresholds=thresholds,
                      axis_label=title)


def battery_last_seen() -> Panel:
    query = ('SELECT "site", "cabinet", "slot", "battery_state", "soc_pct", "temperature_c", "charge_count" '
             f'FROM "slot" WHERE $timeFilter AND {BATTERY} ORDER BY time DESC LIMIT 1')
    return table(t("最近位置", "Last seen"),
                 t("该电池在时间范围内最近一次读数时所在的位置（即其换电柜的位置：见换电柜仪表板，P-5.2.1e）。",
                   "Where the battery was at its most recent reading in the time range (its cabinet's position: "
                   "Cabinet dashboard, P-5.2.1e)."), [influx(query, table_format=True)],
                 h=4, overrides=[_open_cabinet(), override("battery_state", mappings=_battery_states()),
                                 override("soc_pct", unit="percent"), override("temperature_c", unit="celsius")],
                 labels=_labels("Time", "site", "cabinet", "slot", "battery_state", "soc_pct", "temperature_c",
                                "charge_count"))


def battery_charged_where() -> Panel:
    query = ('SELECT count("soc_pct") AS "charging_readings", min("soc_pct") AS "soc_min", max("soc_pct") AS '
             '"soc_max", max("temperature_c") AS "temperature_max" FROM "slot" WHERE $timeFilter AND '
             f'{BATTERY} AND "battery_state" = 1 GROUP BY "site", "cabinet", "slot"')
    return table(t("充电地点", "Where it was charged"),
                 t("时间范围内为该电池充过电的每个换电柜与仓位（battery_state = 充电中），及当时的 SOC 区间与最高温度。",
                   "Every cabinet and slot that charged this battery in the time range (battery_state = "
                   "charging), with the SOC range and peak temperature there."),
                 [influx(query, table_format=True)], h=7,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[_open_cabinet(), override("temperature_max", unit="celsius"),
                            override("soc_min", unit="percent"), override("soc_max", unit="percent")],
                 labels=_labels("site", "cabinet", "slot", "charging_readings", "soc_min", "soc_max",
                                "temperature_max"))


def battery_soc() -> Panel:
    return _battery_series("SOC", t("荷电状态历史。", "State of charge history."), "soc_pct", "percent")


def battery_temperature(rules: RuleSet) -> Panel:
    return _battery_series(t("温度", "Temperature"), t("电池包温度历史（每个时间段内最大值）。",
                                                   "Pack temperature history (max per interval)."), "temperature_c",
                           "celsius", agg="max", thresholds=threshold_steps(rules, PACK_TEMPERATURE))


def battery_voltage() -> Panel:
    return _battery_series(t("电压", "Voltage"), t("电池包电压历史。", "Pack voltage history."), "voltage_v", "volt")


def battery_current() -> Panel:
    return _battery_series(t("充电电流", "Charge current"), t("充电电流历史；负值为放电。",
                                                          "Charge current history; negative = discharge."),
                           "charge_current_a", "amp")


def battery_charge_count() -> Panel:
    return _battery_series(t("循环次数", "Charge count"),
                           t("BMS 上报的循环次数（梯次利用次数，P-5.4）。",
                             "Cycle count reported by the BMS (second-life use count, P-5.4)."),
                           "charge_count", "none", agg="max")


def battery_soh() -> Panel:
    return _battery_series(t("SOH 趋势", "SOH trend"), t("BMS 上报的健康状态（每个时间段内最小值）。",
                                                       "State of health reported by the BMS (min per interval)."),
                           "soh_pct", "percent", agg="min")


def battery_alerts() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND "battery" = \'$battery\' ORDER BY time DESC'
    return table(t("该电池的告警", "Alerts on this battery"),
                 t("该电池在仓期间的告警等级变化。", "Alert level changes while this battery was in the slot."),
                 [influx(query, table_format=True)], h=7, overrides=_level_columns() + [_open_cabinet()],
                 labels=_labels(*ALERT_LABELS))


def build_battery(rules: RuleSet) -> dict[str, Any]:
    # battery_id is a field (not a tag): listed with DISTINCT over the packs seen in the last 7 days, in
    # cabinets and in vehicles; the list is searchable in Grafana's picker.
    battery = influx_variable("battery", t("电池编号", "Battery id"),
                              'SELECT DISTINCT("battery_id") FROM "slot", "vehicle_battery" WHERE time > now() - 7d')
    return dashboard(
        "cascade-battery", t("Cascade / 电池履历", "Cascade / Battery history"),
        t("按编号查看单个电池在各处的履历（P-6.3）：充电地点、SOC、温度、电压、循环次数与 SOH。",
          "History of one battery by id, wherever it was docked (P-6.3): where it charged, SOC, temperature, "
          "voltage, cycles and SOH."),
        [battery_last_seen(), battery_charged_where(),
         battery_soc(), battery_temperature(rules),
         battery_voltage(), battery_current(),
         battery_charge_count(), battery_soh(),
         battery_alerts()],
        tags=["cascade", "noc"], variables=[battery], time_from="now-7d", refresh="")


# =================================================================================================
# cascade-vehicles: vehicles reporting over MQTT / HTTPS (docs/vehicles.md)
# =================================================================================================

def vehicles_reporting() -> Panel:
    # A vehicle is a tag: count the vehicles with a report in the window (one last() per vehicle).
    query = ('SELECT count("last") FROM (SELECT last("sequence") FROM "vehicle" WHERE time > now() - 10m AND '
             f'{FLEET} GROUP BY "fleet", "vehicle") GROUP BY "fleet"')
    return stat(t("近 10 分钟上报车辆数", "Vehicles reporting (last 10 min)"),
                t("各车队最近 10 分钟内至少上报过一次的车辆数（行驶中每分钟上报，停放时每小时上报），与所选时间范围无关。",
                  "Vehicles of each fleet with at least one report in the last 10 minutes (riding vehicles report "
                  "every minute, parked ones every hour), whatever the time range."),
                [influx(query, alias="$tag_fleet")], unit="none", w=8, h=5)


def vehicles_latest() -> Panel:
    query = ('SELECT last("latitude_deg") AS "latitude", last("longitude_deg") AS "longitude", last("soc_pct") AS '
             '"soc", last("temperature_c") AS "temperature", last("battery_id") AS "battery_id" FROM '
             f'"vehicle_battery" WHERE $timeFilter AND {FLEET} GROUP BY "fleet", "vehicle"')
    return table(t("车辆最新位置与电池", "Latest position and battery per vehicle"),
                 t("每辆车在时间范围内最近上报的位置、所装电池编号、SOC 与电池温度（P-5.2.1e：电池在哪里）；"
                   "点击编号查看电池履历。不带电池信息的上报不在此表中。",
                   "Last reported position, mounted battery id, SOC and battery temperature of each vehicle in the "
                   "time range (P-5.2.1e: where each battery is); click an id for its history. Reports without "
                   "the pack are not in this table."),
                 [influx(query, table_format=True)], w=16, h=10, sort_by="vehicle", descending=False,
                 transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                 "indexByName": {}, "renameByName": {}}}],
                 overrides=[_battery_history("battery_id"), override("soc", unit="percent"),
                            override("temperature", unit="celsius"),
                            link_override("vehicle", t("打开车辆", "Open vehicle"), VEHICLE_URL)],
                 labels=_labels("fleet", "vehicle", "latitude", "longitude", "soc", "temperature", "battery_id"))


def vehicles_ingest_reports() -> Panel:
    return timeseries(t("车辆上报入库速率", "Vehicle reports stored"),
                      t("每秒入库的车辆上报，按传输方式（MQTT、HTTPS），来自 cascade_vehicle_reports_total。",
                        "Vehicle reports stored per second by transport (MQTT, HTTPS), from "
                        "cascade_vehicle_reports_total."),
                      [prom("sum by (transport) (rate(cascade_vehicle_reports_total[$__rate_interval]))",
                            legend="{{transport}}")], unit="cps", w=8, h=5, axis_label=t("条/秒", "reports/s"))


def vehicles_ingest_rejected() -> Panel:
    return timeseries(t("车辆上报拒收（按原因）", "Vehicle reports refused by reason"),
                      t("每秒被拒收（整条不入库）的车辆上报，按传输方式与原因（docs/vehicles.md 拒收原因表）。",
                        "Vehicle reports refused per second (nothing of them stored), by transport and reason "
                        "(the refusals table of docs/vehicles.md)."),
                      [prom("sum by (transport, reason) (rate(cascade_vehicle_rejected_total[$__rate_interval]))",
                            legend="{{transport}} {{reason}}")], unit="cps", bars=True,
                      axis_label=t("条/秒", "reports/s"))


def vehicles_ingest_refused_share() -> Panel:
    refused = "sum by (transport) (rate(cascade_vehicle_rejected_total[$__rate_interval]))"
    stored = "sum by (transport) (rate(cascade_vehicle_reports_total[$__rate_interval]))"
    return timeseries(t("车辆上报拒收率", "Vehicle reports refused share"),
                      t("被拒收的上报占全部收到上报的比例，按传输方式；持续升高说明设备配置、时钟或签名有问题。",
                        "Share of received reports that were refused, by transport; a share that keeps rising is "
                        "a device configuration, clock or signature problem."),
                      [prom(f"{refused} / ({refused} + {stored})", legend="{{transport}}")], unit="percentunit", w=8, h=5,
                      axis_label=t("拒收占比", "refused share"))


def vehicles_commands() -> Panel:
    return timeseries(t("远程命令（按结果）", "Remote commands by outcome"),
                      t("每秒的车辆远程命令，按结果：sent 已下发，acked 已确认且回读一致，failed 车辆回复失败、拒绝或回读不一致，"
                        "expired 过期未确认（即告警 vehicle_command_unacknowledged）。",
                        "Vehicle remote commands per second by outcome: sent (issued), acked (acknowledged and read "
                        "back as asked), failed (the vehicle answered failed or rejected, or read back another "
                        "state), expired (never acknowledged: the vehicle_command_unacknowledged alert)."),
                      [prom("sum by (outcome) (rate(cascade_vehicle_commands_total[$__rate_interval]))",
                            legend="{{outcome}}")], unit="cps", w=8, h=10, bars=True,
                      axis_label=t("条/秒", "commands/s"))


def build_vehicles() -> dict[str, Any]:
    fleet = influx_variable("fleet", t("车队", "Fleet"), 'SHOW TAG VALUES FROM "vehicle" WITH KEY = "fleet"',
                            multi=True, include_all=True, all_value=".*")
    return dashboard(
        "cascade-vehicles", t("Cascade / 车辆", "Cascade / Vehicles"),
        t("通过 MQTT / HTTPS 上报的换电车辆：有多少车在上报、每辆车的最新位置与电池，以及车辆上报入库是否正常。",
          "Swap vehicles reporting over MQTT / HTTPS: how many report, where each is with which battery, and "
          "whether vehicle ingest is healthy."),
        [vehicles_reporting(), vehicles_ingest_reports(), vehicles_ingest_refused_share(),
         vehicles_latest(), vehicles_commands(), vehicles_ingest_rejected()],
        tags=["cascade", "noc"], variables=[fleet], time_from="now-1h", refresh="30s")


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
    return stat(t("采集器 / InfluxDB 状态", "Collector / InfluxDB up"),
                t("Prometheus 能抓取到采集器；采集器最近一次写入 InfluxDB 成功。",
                  "Prometheus can scrape the collector; the collector's last InfluxDB write succeeded."),
                [prom('up{job="cascade"}', legend=t("采集器 {{instance}}", "collector {{instance}}"), instant=True),
                 prom("cascade_influx_up", ref="B", legend=t("InfluxDB（{{instance}} 写入）",
                                                             "influxdb from {{instance}}"), instant=True)],
                unit="none", w=8, h=5, thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
                mappings=[{"type": "value", "options": {"0": {"text": t("故障", "DOWN"), "index": 0},
                                                        "1": {"text": t("正常", "up"), "index": 1}}}])


def pipeline_poll_duration() -> Panel:
    return timeseries(t("轮询耗时", "Poll duration"),
                      t("单次设备轮询耗时的分位数（cascade_poll_duration_seconds）。",
                        "Quantiles of one device poll (cascade_poll_duration_seconds)."),
                      _quantiles("cascade_poll_duration_seconds", "source"), unit="s", w=16, h=5,
                      axis_label=t("耗时", "duration"))


def pipeline_polls() -> Panel:
    return timeseries(t("每秒轮询与读数", "Polls and readings per second"),
                      t("每秒成功的轮询次数与解码出的仓位读数。", "Successful polls and slot readings decoded per second."),
                      [prom("sum by (source) (rate(cascade_polls_total[$__rate_interval]))",
                            legend=t("轮询 {{source}}", "polls {{source}}")),
                       prom("sum(rate(cascade_readings_total[$__rate_interval]))", ref="B",
                            legend=t("仓位读数", "slot readings"))],
                      unit="ops", axis_label=t("次/秒", "per second"))


def pipeline_poll_errors() -> Panel:
    return timeseries(t("轮询失败率（按原因）", "Poll failure share by kind"),
                      t("失败的轮询占该类数据源全部轮询的比例，按数据源类型与错误原因。",
                        "Share of polls that failed, by source kind and error kind."),
                      [prom("sum by (source, kind) (rate(cascade_poll_errors_total[$__rate_interval])) "
                            "/ on (source) group_left () (sum by (source) (rate(cascade_polls_total[$__rate_interval])) "
                            "+ sum by (source) (rate(cascade_poll_errors_total[$__rate_interval])))",
                            legend="{{source}} {{kind}}")], unit="percentunit", bars=True,
                      axis_label=t("失败占比", "failed share"))


def pipeline_modbus_requests() -> Panel:
    return timeseries(t("每秒 Modbus 请求", "Modbus requests per second"),
                      t("按数据源类型发往设备的读请求（一次 Modbus 轮询包含多个请求；推送数据不发请求）。",
                        "Read requests sent to devices by source kind (a Modbus poll is several requests; pushed "
                        "data sends none)."),
                      [prom("sum by (source) (rate(cascade_source_requests_total[$__rate_interval]))",
                            legend="{{source}}")],
                      unit="reqps", axis_label=t("请求/秒", "requests/s"))


def pipeline_decode_errors() -> Panel:
    return timeseries(t("解码与编码错误", "Decode and encode errors"),
                      t("每秒解码时被拒绝的寄存器值（按字段）；无法编码为行协议的读数。",
                        "Register values rejected while decoding, by field; readings that could not be encoded as "
                        "line protocol."),
                      [prom("sum by (field) (rate(cascade_decode_errors_total[$__rate_interval]))",
                            legend=t("解码 {{field}}", "decode {{field}}")),
                       prom("sum(rate(cascade_line_encode_errors_total[$__rate_interval]))", ref="B",
                            legend=t("行协议编码", "line encode"))], unit="cps", bars=True,
                      axis_label=t("个/秒", "per second"))


def pipeline_write_batches() -> Panel:
    return timeseries(t("InfluxDB 写入批次（按结果）", "InfluxDB write batches by result"),
                      t("ok 成功；error 稍后重试（已落盘）；rejected 服务器拒收了部分行。",
                        "ok; error = retried later (spooled); rejected = the server refused some lines."),
                      [prom("sum by (result) (rate(cascade_influx_write_batches_total[$__rate_interval]))",
                            legend="{{result}}")], unit="ops", stack=True, axis_label=t("批/秒", "batches/s"))


def pipeline_write_latency() -> Panel:
    return timeseries(t("InfluxDB 写入延迟", "InfluxDB write latency"),
                      t("单次写入请求耗时的分位数。", "Quantiles of one write request."),
                      _quantiles("cascade_influx_write_duration_seconds"), unit="s", axis_label=t("耗时", "duration"))


def pipeline_spool_depth() -> Panel:
    return timeseries(t("落盘与缓冲深度", "Spool and buffer depth"),
                      t("在磁盘缓存（InfluxDB 不可达时）和内存中等待的行数；持续增长的磁盘缓存将会丢行"
                        "（CascadeSpoolGrowing）。",
                        "Lines waiting in the disk spool (InfluxDB unreachable) and in memory; a spool that keeps "
                        "growing will drop lines (CascadeSpoolGrowing)."),
                      [prom("sum by (instance) (cascade_influx_spool_lines)",
                            legend=t("磁盘 {{instance}}", "spool {{instance}}")),
                       prom("sum by (instance) (cascade_influx_buffer_lines)", ref="B",
                            legend=t("内存 {{instance}}", "memory {{instance}}"))], unit="short",
                      axis_label=t("行数", "lines"))


def pipeline_lines() -> Panel:
    names = (("A", "written", "已写入"), ("B", "spooled", "已落盘"), ("C", "replayed", "已补写"),
             ("D", "dropped", "已丢弃"), ("E", "rejected", "被拒收"))
    targets = [prom(f"sum(rate(cascade_influx_lines_{name}_total[$__rate_interval]))", ref=ref, legend=t(zh, name))
               for ref, name, zh in names]
    return timeseries(t("写入 / 落盘 / 补写 / 丢弃的行", "Lines written / spooled / replayed / dropped"),
                      t("按去向统计的每秒行协议行数。已丢弃与被拒收的行是丢失的历史数据。",
                        "Line-protocol lines per second by fate. dropped and rejected are lost history."),
                      targets, unit="cps", axis_label=t("行/秒", "lines/s"),
                      overrides=[{"matcher": {"id": "byFrameRefID", "options": ref},
                                  "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}
                                 for ref in ("D", "E")])


def pipeline_alert_pushes() -> Panel:
    return timeseries(t("Alertmanager 推送", "Alertmanager pushes"),
                      t("左轴：Alertmanager 按状态每秒接收的告警、失败的推送请求与丢弃的变化；"
                        "右轴：等待推送的变化数。",
                        "Left axis: alerts Alertmanager accepted per second by status, failed push requests and "
                        "dropped changes; right axis: changes waiting."),
                      [prom("sum by (status) (rate(cascade_alert_pushed_total[$__rate_interval]))",
                            legend=t("已推送 {{status}}", "pushed {{status}}")),
                       prom("sum(rate(cascade_alert_push_failures_total[$__rate_interval]))", ref="B",
                            legend=t("失败请求", "failed requests")),
                       prom("sum(cascade_alert_push_pending)", ref="C", legend=t("待推送", "pending")),
                       prom("sum(rate(cascade_alert_push_dropped_total[$__rate_interval]))", ref="D",
                            legend=t("已丢弃", "dropped"))], unit="cps", axis_label=t("个/秒", "per second"),
                      overrides=[right_axis("C", "none", t("待推送", "pending"))])


def pipeline_alert_transitions() -> Panel:
    return timeseries(t("告警等级变化", "Alert transitions"),
                      t("每秒告警等级变化次数，按变化类型与显示的等级。",
                        "Alert level changes per second by kind and level shown."),
                      [prom("sum by (kind, level) (rate(cascade_alert_transitions_total[$__rate_interval]))",
                            legend=t("{{kind}} {{level}}级", "{{kind}} level {{level}}"))], unit="cps", bars=True,
                      axis_label=t("次/秒", "per second"))


def pipeline_notify_deliveries() -> Panel:
    return timeseries(t("通知送达（按渠道与结果）", "Notifier deliveries by channel and result"),
                      t("每秒完成的通知（含重试后）；failed 表示有人未被通知到（CascadeNotifyFailing）。",
                        "Finished notifications (after retries) per second; failed = a person was not told "
                        "(CascadeNotifyFailing)."),
                      [prom("sum by (channel, result) (rate(cascade_notify_deliveries_total[$__rate_interval]))",
                            legend="{{channel}} {{result}}"),
                       prom("sum by (receiver, result) (rate(cascade_notify_webhooks_total[$__rate_interval]))",
                            ref="B", legend="webhook {{receiver}} {{result}}")], unit="ops",
                      axis_label=t("次/秒", "per second"))


def pipeline_notify_latency() -> Panel:
    return timeseries(t("通知送达耗时", "Notifier delivery time"),
                      t("从 Alertmanager webhook 到最终送达结果的时间，按渠道（含重试）。",
                        "Time from Alertmanager webhook to final delivery outcome, by channel (retries included)."),
                      _quantiles("cascade_notify_delivery_seconds", "channel"), unit="s",
                      axis_label=t("耗时", "duration"))


def build_pipeline() -> dict[str, Any]:
    return dashboard(
        "cascade-pipeline", t("Cascade / 数据链路健康", "Cascade / Pipeline health"),
        t("采集器、InfluxDB 写入、告警推送与通知服务的健康状况：链路中断看起来和一切平静的全网一模一样。",
          "Health of the collector, the InfluxDB sink, the alert push and the notifier: a broken pipeline "
          "looks exactly like a quiet fleet."),
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
    return stat(t("监测中 / 在线换电柜", "Cabinets monitored / online"),
                t("纳入监测的换电柜数与当前应答的换电柜数。", "Cabinets under monitoring and those answering now."),
                [prom("count(cascade_device_up)", legend=t("监测中", "monitored"), instant=True),
                 prom("sum(cascade_device_up)", ref="B", legend=t("在线", "online"), instant=True)],
                unit="none", w=6)


def regulator_batteries() -> Panel:
    return stat(t("在仓 / 充电中电池", "Batteries docked / charging"),
                t("当前在换电柜中的电池数与正在充电的电池数。", "Batteries in cabinets and batteries charging now."),
                [prom("sum(cascade_cabinet_slots_occupied)", legend=t("在仓", "docked"), instant=True),
                 prom("sum(cascade_cabinet_slots_charging)", ref="B", legend=t("充电中", "charging"), instant=True)],
                unit="none", w=6)


def regulator_level2() -> Panel:
    return stat(t("活动 2 级警告", "Active level-2 warnings"), t("当前活动的 2 级（警告）告警数。",
                                                             "Active level-2 (warning) alerts now."),
                [prom('sum(cascade:alerts_active:sum_by_level{level="2"}) or vector(0)', legend=t("2级", "level 2"),
                      instant=True)],
                unit="none", w=6, thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}])


def regulator_level3() -> Panel:
    return stat(t("活动 3 级严重告警", "Active level-3 alarms"),
                t("当前活动的 3 级（严重）告警数，含保护动作失败。",
                  "Active level-3 (critical) alerts now, failed protective actions included."),
                [prom("cascade:alerts_active_critical:sum", legend=t("3级", "level 3"), instant=True)],
                unit="none", w=6, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])


def regulator_incident_rate() -> Panel:
    query = ('SELECT count("level") FROM "alert" WHERE $timeFilter AND "level" >= 2 AND '
             '("kind" = \'raise\' OR "kind" = \'escalate\') GROUP BY time($__interval), "severity" fill(null)')
    return timeseries(t("事件趋势", "Incidents over time"),
                      t("触发或升级到 2 级、3 级的告警数，按严重程度。",
                        "Alerts raised or escalated to level 2 or 3, by severity."),
                      [influx(query, alias="$tag_severity")], unit="none", w=24, h=7, bars=True,
                      axis_label=t("告警数", "alerts"))


def regulator_incidents() -> Panel:
    query = f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND "level" >= 2 ORDER BY time DESC LIMIT 1000'
    return table(t("事件（2级及以上）", "Incidents (level ≥ 2)"),
                 t("每条触发、升级或降级到 2 级、3 级的告警，附诊断与已采取或建议的处置。",
                   "Every alert raised, escalated or de-escalated to level 2 or 3, with the diagnosis and the action "
                   "taken or advised."), [influx(query, table_format=True)],
                 h=10, overrides=_level_columns(), labels=_labels(*ALERT_LABELS))


def regulator_actions() -> Panel:
    query = f'SELECT {COMMAND_COLUMNS} FROM "command" WHERE $timeFilter ORDER BY time DESC LIMIT 1000'
    return table(t("保护动作日志", "Protective actions log"),
                 t("每条保护或人工命令、发起方，以及证明其已生效的回读结果（P-3.3）。",
                   "Every protective or operator command, who asked, and the read-back proving it took effect "
                   "(P-3.3)."), [influx(query, table_format=True)], h=10,
                 overrides=_command_columns(), labels=_labels(*COMMAND_LABELS))


def _alarms_by_category(title: str, description: str, where: str = "") -> Panel:
    """Raises in the time range by alarm category (alerting/categories.py, named per language) and level."""
    from alerting.categories import CATEGORY_NAMES

    query = (f'SELECT count("level") AS "n" FROM "alert" WHERE $timeFilter AND "kind" = \'raise\' {where}'
             'GROUP BY "category", "severity"')
    names = [{"type": "value", "options": {code: {"text": t(zh, en), "index": i}
                                           for i, (code, (en, zh)) in enumerate(CATEGORY_NAMES.items())}}]
    return table(title, description, [influx(query, table_format=True)], h=9, sort_by="n",
                 overrides=[override("category", mappings=names)],
                 labels={"category": t("报警类别", "category"), "severity": t("等级", "level"),
                         "n": t("告警数", "alarms")})


def regulator_by_category() -> Panel:
    return _alarms_by_category(
        t("按报警类别与等级", "By alarm category and level"),
        t("时间范围内新触发的告警数，按报警类别（GB/T 32960.3 通用报警标志，及换电柜特有的火灾、气体、进水、"
          "热失控前兆与设备故障类别）与等级；一次触发算一件。",
          "Alerts raised in the time range by alarm category (the general alarm flags of GB/T 32960.3, "
          "plus the cabinet's fire, gas, water, thermal-runaway-precursor and device-fault categories) "
          "and level; one raise is one incident."))


def regulator_vehicle_categories() -> Panel:
    # A vehicle's alerts carry its fleet as site: the vehicle alarms are the alerts of the vehicle fleets.
    return _alarms_by_category(
        t("车辆报警（按类别与等级）", "Vehicle alarms by category and level"),
        t("时间范围内车辆（所选车队）新触发的告警数，按 GB/T 32960.3 式报警类别与等级；一次触发算一件。",
          "Alerts raised on vehicles (of the fleets selected) in the time range, by GB/T 32960.3-style "
          "alarm category and level; one raise is one incident."), where='AND "site" =~ /^$fleet$/ ')


def build_regulator() -> dict[str, Any]:
    alerts = annotation(t("事件（2级及以上）", "Incidents (level ≥ 2)"),
                        'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" WHERE $timeFilter AND '
                        '"level" >= 2', color="red")
    return dashboard(
        "cascade-regulator", t("Cascade / 监管视图", "Cascade / Regulator view"),
        t("面向监管部门的只读全网汇总：监测覆盖、活动的 2/3 级告警、事件与保护动作。",
          "Read-only fleet summary for regulators: monitoring coverage, active level-2/3 alerts, incidents and "
          "protective actions."),
        [regulator_cabinets(), regulator_batteries(), regulator_level2(), regulator_level3(),
         regulator_incident_rate(), regulator_by_category(), regulator_vehicle_categories(), regulator_incidents(),
         regulator_actions()],
        tags=["cascade", "regulator"], annotations=[alerts], editable=False, time_from="now-7d", refresh="1m",
        variables=[influx_variable("fleet", t("车队", "Vehicle fleet"), 'SHOW TAG VALUES FROM "vehicle" WITH KEY = '
                                   '"fleet"', multi=True, include_all=True)])


# -- battery health: which packs are fading, which must leave service -----------------------------------
# Per position (cabinet slot) the pack docked there now: battery_id is a field, so ranking is by where a
# pack is, with its id shown; the battery history dashboard follows one pack everywhere.

_NOW_IN_SLOTS = ('FROM "slot" WHERE time > now() - 1h AND "battery_state" != 0 '
                 'GROUP BY "site", "cabinet", "slot"')


def health_lowest_soh() -> Panel:
    query = ('SELECT last("soh_pct") AS "soh", last("battery_id") AS "battery", last("charge_count") AS "cycles" '
             + _NOW_IN_SLOTS)
    return table(t("SOH 最低的电池", "Lowest state of health"),
                 t("当前在仓电池按 BMS 上报的 SOH 从低到高排序（最近 1 小时）；低于 80% 的电池接近退役或梯次利用下限"
                   "（D-4.2：800 次循环后 ≥ 70%）。",
                   "Packs docked now, by the SOH their BMS reports, lowest first (last hour); below 80 % a pack nears "
                   "the end of its second life (D-4.2: ≥ 70 % after 800 cycles)."),
                 [influx(query, table_format=True)], w=12, h=10, sort_by="soh", descending=False,
                 labels={"site": t("站点", "site"), "cabinet": t("换电柜", "cabinet"), "slot": t("仓位", "slot"),
                         "soh": "SOH %", "battery": t("电池编号", "battery"), "cycles": t("充电次数", "cycles")},
                 overrides=[_battery_history("battery")])


def health_cell_spread() -> Panel:
    query = ('SELECT last("cell_voltage_max_v") - last("cell_voltage_min_v") AS "spread_v", '
             'last("battery_id") AS "battery" ' + _NOW_IN_SLOTS)
    return table(t("单体压差最大的电池", "Widest cell-voltage spread"),
                 t("当前在仓电池的单体最高与最低电压之差，从大到小：压差扩大是容量衰减不均或均衡失效的信号。",
                   "Highest minus lowest cell voltage of each pack docked now, widest first: a growing spread is "
                   "uneven fading or failed balancing."),
                 [influx(query, table_format=True)], w=12, h=10, sort_by="spread_v",
                 labels={"site": t("站点", "site"), "cabinet": t("换电柜", "cabinet"), "slot": t("仓位", "slot"),
                         "spread_v": t("压差 V", "spread V"), "battery": t("电池编号", "battery")},
                 overrides=[_battery_history("battery")])


def health_nearing_limits() -> Panel:
    query = ('SELECT count("soh") FROM (SELECT last("soh_pct") AS "soh" ' + _NOW_IN_SLOTS + ') WHERE "soh" < 80')
    return stat(t("SOH 低于 80% 的在仓电池", "Docked packs below 80 % SOH"),
                t("当前在仓、BMS 上报 SOH 低于 80% 的电池数：梯次利用验收与退役复核的候选。",
                  "Packs docked now whose BMS reports SOH below 80 %: candidates for second-life review or "
                  "retirement."),
                [influx(query)], unit="none", w=6, thresholds=[{"color": "green", "value": None},
                                                              {"color": "orange", "value": 1}])


def health_soh_spread() -> Panel:
    query = ('SELECT min("soh"), mean("soh"), max("soh") FROM (SELECT last("soh_pct") AS "soh" '
             + _NOW_IN_SLOTS + ')')
    return stat(t("在仓电池 SOH：最低 / 平均 / 最高", "Docked packs' SOH: lowest / mean / highest"),
                t("当前在仓电池 BMS 上报 SOH 的最低、平均与最高值。",
                  "Lowest, mean and highest SOH the BMS of each docked pack reports now."),
                [influx(query, alias="$col")], unit="percent", w=18)


def build_battery_health() -> dict[str, Any]:
    return dashboard(
        "cascade-battery-health", t("Cascade / 电池健康", "Cascade / Battery health"),
        t("哪些电池在衰减、哪些该退出服务：在仓电池按 SOH 与单体压差排序，点击电池编号查看其履历。",
          "Which packs are fading and which must leave service: packs docked now ranked by SOH and by cell "
          "spread; click a battery id for its history."),
        [health_nearing_limits(), health_soh_spread(), health_lowest_soh(), health_cell_spread()],
        tags=["cascade", "noc"], refresh="5m", time_from="now-24h")


# -- on call: what is ringing, who is on it, how fast people acknowledge --------------------------------

def oncall_active() -> Panel:
    return stat(t("活动告警（按等级）", "Active alerts by level"),
                t("当前活动的告警数，按等级（含保护动作失败）。", "Alerts active now, by level (failed protective "
                                                           "actions included)."),
                [prom("sum by (level) (cascade_alerts_active)", legend=t("{{level}} 级", "level {{level}}"),
                      instant=True)], unit="none", w=6)


def oncall_acknowledged() -> Panel:
    return stat(t("已确认（按等级）", "Acknowledged by level"),
                t("当前活动且已有人确认（正在处置）的告警数；确认后不再重复呼叫，直到升级或恢复。",
                  "Active alerts someone has acknowledged (is on): their repeat calls stop until they escalate "
                  "or clear."),
                [prom("sum by (level) (cascade_alerts_acknowledged)", legend=t("{{level}} 级", "level {{level}}"),
                      instant=True)], unit="none", w=6)


def oncall_unacknowledged_critical() -> Panel:
    return stat(t("未确认的 3 级告警", "Unacknowledged level-3 alerts"),
                t("当前无人确认的 3 级告警：超过升级时限后会呼叫下一位值班人员。",
                  "Level-3 alerts nobody has acknowledged: past the escalation time they page the next on-call."),
                [prom('sum(cascade_alerts_active{level="3"}) - sum(cascade_alerts_acknowledged{level="3"})',
                      legend=t("未确认", "unacknowledged"), instant=True)],
                unit="none", w=6, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])


def oncall_silences() -> Panel:
    return stat(t("生效中的静默", "Active silences"),
                t("Alertmanager 中生效的静默数：确认一条告警会为它加一条静默（升级或恢复时解除）。",
                  "Silences in force in Alertmanager: acknowledging an alert adds one for it (lifted on escalation "
                  "or clear)."),
                [prom('sum(alertmanager_silences{state="active"}) or vector(0)', legend=t("静默", "silences"),
                      instant=True)], unit="none", w=6)


def oncall_time_to_ack() -> Panel:
    targets = [prom(f"histogram_quantile({q}, sum by (le) (increase(cascade_alert_ack_seconds_bucket[1d])))",
                    ref=ref, legend=legend)
               for q, ref, legend in ((0.5, "A", t("中位数", "median")), (0.95, "B", "p95"))]
    return timeseries(t("确认用时", "Time to acknowledge"),
                      t("告警（按当前等级起算）到有人确认所用时间，过去 24 小时的中位数与 95 分位。",
                        "Time from an alert (at its current level) to its acknowledgement: median and 95th "
                        "percentile over the past 24 hours."), targets, unit="s", w=12,
                      axis_label=t("用时", "time"))


def oncall_active_list() -> Panel:
    return table(t("活动告警明细", "Active alerts"),
                 t("每条活动告警的规则、等级与位置（与 Prometheus 告警页 CascadeSafetyAlert 一致）。",
                   "Every active alert's rule, level and place (as Prometheus' CascadeSafetyAlert shows them)."),
                 [prom("cascade_alert_active == 1", instant=True, table_format=True)], w=12, h=8,
                 labels={"rule": t("规则", "rule"), "level": t("等级", "level"), "site": t("站点", "site"),
                         "cabinet": t("换电柜", "cabinet"), "slot": t("仓位", "slot")})


def build_oncall() -> dict[str, Any]:
    return dashboard(
        "cascade-oncall", t("Cascade / 值班", "Cascade / On call"),
        t("值班情况：现在什么在响、谁已在处置、多少 3 级告警无人确认、确认用了多久。",
          "The on-call situation: what is ringing now, who is on it, which level-3 alerts nobody has "
          "acknowledged, and how long acknowledging takes."),
        [oncall_active(), oncall_acknowledged(), oncall_unacknowledged_critical(), oncall_silences(),
         oncall_time_to_ack(), oncall_active_list()],
        tags=["cascade", "noc"], refresh="10s", time_from="now-24h")


# -- alarm statistics: how many alarms, of which level, where, over any range ---------------------------
# One incident is one `raise` (an escalation is the same incident, not another alarm); "reached level 3"
# counts the raise at 3 or the escalation to 3. Every panel answers over the dashboard's time range.

_RAISED = '"kind" = \'raise\''
_REACHED_3 = '"level" = 3 AND ("kind" = \'raise\' OR "kind" = \'escalate\')'


def stats_total() -> Panel:
    return stat(t("告警事件总数", "Alarm incidents"),
                t("时间范围内新触发的告警数（一次触发算一件，升级不重复计数），各等级合计。",
                  "Alerts raised in the time range (one raise is one incident; an escalation is not counted "
                  "again), all levels."),
                [influx(f'SELECT count("level") FROM "alert" WHERE $timeFilter AND {_RAISED}')],
                unit="none", w=6)


def stats_by_level() -> Panel:
    return stat(t("按触发等级", "By level at raise"),
                t("按触发时的等级统计新告警：1 级提示、2 级警告、3 级严重。",
                  "New alerts by the level they were raised at: 1 notice, 2 warning, 3 critical."),
                [influx(f'SELECT count("level") FROM "alert" WHERE $timeFilter AND {_RAISED} GROUP BY "severity"',
                        alias="$tag_severity")], unit="none", w=12)


def stats_reached_3() -> Panel:
    return stat(t("达到 3 级", "Reached level 3"),
                t("时间范围内达到 3 级（严重）的告警：直接以 3 级触发或升级到 3 级。",
                  "Alerts that reached level 3 (critical) in the range: raised at 3 or escalated to 3."),
                [influx(f'SELECT count("level") FROM "alert" WHERE $timeFilter AND {_REACHED_3}')],
                unit="none", w=6, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])


def stats_per_day() -> Panel:
    query = (f'SELECT count("level") FROM "alert" WHERE $timeFilter AND {_RAISED} '
             'GROUP BY time(1d), "severity" fill(0)')
    return timeseries(t("每日新告警", "New alarms per day"),
                      t("每天新触发的告警数，按等级。", "Alerts raised per day, by level."),
                      [influx(query, alias="$tag_severity")], unit="none", w=24, h=7, bars=True, stack=True,
                      axis_label=t("告警数", "alarms"))


def stats_by_rule() -> Panel:
    query = f'SELECT count("level") AS "n" FROM "alert" WHERE $timeFilter AND {_RAISED} GROUP BY "rule"'
    return table(t("按规则", "By rule"), t("每条规则在时间范围内触发的告警数。",
                                           "Alerts raised by each rule in the time range."),
                 [influx(query, table_format=True)], w=12, h=9, sort_by="n",
                 labels={"rule": t("规则", "rule"), "n": t("告警数", "alarms")})


def stats_by_site() -> Panel:
    query = f'SELECT count("level") AS "n" FROM "alert" WHERE $timeFilter AND {_RAISED} GROUP BY "site"'
    return table(t("按站点", "By site"), t("每个站点在时间范围内触发的告警数。",
                                           "Alerts raised at each site in the time range."),
                 [influx(query, table_format=True)], w=12, h=9, sort_by="n",
                 labels={"site": t("站点", "site"), "n": t("告警数", "alarms")})


def build_alarm_stats() -> dict[str, Any]:
    return dashboard(
        "cascade-alarm-stats", t("Cascade / 告警统计", "Cascade / Alarm statistics"),
        t("本月（或任意时间范围）有多少告警、什么等级、哪些规则、哪些站点：一次触发算一件，升级不重复计数。",
          "How many alarms this month (or any range), of which level, from which rules and sites: one raise is "
          "one incident, an escalation is not counted again."),
        [stats_total(), stats_by_level(), stats_reached_3(), stats_per_day(), stats_by_rule(), stats_by_site()],
        tags=["cascade", "noc", "regulator"], refresh="1m", time_from="now/M")


# =================================================================================================

# Every builder gets the rule catalogue; the vehicle, pipeline and regulator dashboards draw no value
# thresholds, so they ignore it.
DASHBOARDS: dict[str, Callable[[RuleSet], dict[str, Any]]] = {
    "cascade-fleet": build_fleet,
    "cascade-cabinet": build_cabinet,
    "cascade-battery": build_battery,
    "cascade-vehicles": lambda _rules: build_vehicles(),
    "cascade-pipeline": lambda _rules: build_pipeline(),
    "cascade-regulator": lambda _rules: build_regulator(),
    "cascade-alarm-stats": lambda _rules: build_alarm_stats(),
    "cascade-battery-health": lambda _rules: build_battery_health(),
    "cascade-oncall": lambda _rules: build_oncall(),
    "cascade-second-life": lambda _rules: build_second_life(),
}


def build_all(rules: RuleSet | None = None, lang: str = DEFAULT_LANGUAGE) -> dict[str, dict[str, Any]]:
    """uid → dashboard model in ``lang`` (default Simplified Chinese), thresholds from ``rules``
    (default: the shipped catalogue).

    Raises InputError naming the catalogue and rule if a panel's rule or level is gone, ValueError for
    an unknown language.
    """
    rules = load_rules(DEFAULT_CATALOGUE) if rules is None else rules
    with language(lang):
        models = {uid: build(rules) for uid, build in DASHBOARDS.items()}
    for uid, model in models.items():
        if model["uid"] != uid:
            raise ValueError(f"dashboard {uid!r} builds uid {model['uid']!r}")
    return models


def render(model: dict[str, Any]) -> str:
    """The file text: sorted keys, two-space indent, trailing newline (small, stable diffs)."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path = DIRECTORY, rules: RuleSet | None = None,
              lang: str = DEFAULT_LANGUAGE) -> list[Path]:
    """Write ``<uid>.json`` for every dashboard in ``lang``; returns the paths written."""
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for uid, model in build_all(rules, lang).items():
        path = directory / f"{uid}.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths
