"""``cascade-second-life``: battery health across the second life, from what ``cascade health analyse``
stores (``battery_health``, ``charge_session``, the grading ``alert`` points; docs/battery-health.md).

Fleet health ranking, grade distribution per site, a pack's life over its cycles (measured SOH beside
its BMS's own, capacity per charge, resistance), charge energy and use per cabinet (P-5.4), and the
grading alerts. The grading limits shown are read from :data:`health.grading.LIMITS`, never copied.
"""

from __future__ import annotations

from typing import Any

from dashboards.i18n import t
from dashboards.panels import (
    Panel,
    dashboard,
    influx,
    influx_variable,
    link_override,
    stat,
    table,
    timeseries,
)
from health.grading import LIMITS

__all__ = ["build_second_life"]

UID = "cascade-second-life"
PACK_URL = f"/d/{UID}/{UID}?var-battery=${{__value.raw}}&${{__url_time_range}}"
_LATEST = 'FROM "battery_health" WHERE $timeFilter GROUP BY "battery", "site"'


def _grades() -> list[tuple[int, str]]:
    """(grade_code, label) of each grade, in the language being built."""
    return [(0, t("继续使用", "keep in service")), (1, t("限制使用", "restrict")), (2, t("建议退役", "retire"))]

PACK = "\"battery\" = '$battery'"
_LIMIT = {lim.id: lim for lim in LIMITS}


def _pack_life_link(field: str) -> dict[str, Any]:
    return link_override(field, t("电池全寿命", "Pack's life"), PACK_URL)


def grade_counts() -> Panel:
    targets = [influx(f'SELECT count("g") FROM (SELECT last("grade_code") AS "g" {_LATEST}) WHERE "g" = {code}',
                      ref="ABC"[code], alias=label) for code, label in _grades()]
    return stat(t("分级：电池数", "Grades: packs"),
                t("最近一次分析（时间范围内）每个等级的电池数：继续使用、限制使用、建议退役。",
                  "Packs per grade at their latest analysis in the range: keep in service, restrict, retire."),
                targets, unit="none", w=8)


def grade_by_site() -> Panel:
    targets = [influx(f'SELECT count("g") FROM (SELECT last("grade_code") AS "g" {_LATEST}) WHERE "g" = {code} '
                      'GROUP BY "site"', ref="ABC"[code], alias=f"$tag_site {label}")
               for code, label in _grades()]
    return stat(t("各站点的分级分布", "Grade distribution per site"),
                t("每个站点各等级的电池数（电池最近一次分析所在站点）。",
                  "Packs per grade at each site (the site of each pack's latest analysis)."),
                targets, unit="none", w=10)


def bms_disagrees() -> Panel:
    query = f'SELECT count("d") FROM (SELECT last("soh_disagrees") AS "d" {_LATEST}) WHERE "d" = true'
    return stat(t("BMS SOH 与实测不符", "BMS SOH disagrees"),
                t("BMS 自报 SOH 与实测容量得出的 SOH 相差超过 5 个百分点（或 2σ）的电池数：BMS 的 SOH 常偏高或不再更新。",
                  "Packs whose BMS's own SOH differs from the measured one by more than 5 points (or 2 σ): a "
                  "BMS's SOH is often optimistic or frozen."),
                [influx(query)], unit="none", w=6,
                thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}])


def health_ranking() -> Panel:
    query = ('SELECT last("soh_pct") AS "soh", last("soh_sigma_pct") AS "soh_sigma", last("soh_bms_pct") AS "soh_bms", '
             'last("capacity_ah") AS "capacity_ah", last("resistance_mohm") AS "resistance_mohm", '
             'last("fade_pct_per_100_cycles") AS "fade", last("cycles_to_70") AS "cycles_to_70", '
             'last("retention_pct") AS "retention", last("efficiency_pct") AS "efficiency", '
             'last("charge_sessions") AS "uses", last("grade") AS "grade", last("limits_crossed") AS "limits" '
             + _LATEST)
    soh_r, soh_x = _LIMIT["soh_below_restrict"], _LIMIT["soh_below_retire"]
    return table(t("电池健康排名", "Fleet health ranking"),
                 t(f"每块电池最近一次分析：实测 SOH（±σ）与 BMS 自报 SOH、容量、内阻、每 100 次循环衰减、距 70% 的循环数、"
                   f"28 天荷电保持率、充放电效率、使用次数与等级，SOH 从低到高；低于 {soh_r.threshold:g}% 限制使用"
                   f"（{soh_r.clause}），低于 {soh_x.threshold:g}% 建议退役（{soh_x.clause}）。",
                   f"Each pack's latest analysis: measured SOH (± σ) beside its BMS's own, capacity, resistance, fade "
                   f"per 100 cycles, cycles left to 70 %, 28-day charge retention, round-trip efficiency, uses and "
                   f"grade, lowest SOH first; below {soh_r.threshold:g} % restrict ({soh_r.clause}), below "
                   f"{soh_x.threshold:g} % retire ({soh_x.clause})."),
                 [influx(query, table_format=True)], w=24, h=10, sort_by="soh", descending=False,
                 labels={"battery": t("电池编号", "battery"), "site": t("站点", "site"), "soh": "SOH %",
                         "soh_sigma": "σ %", "soh_bms": t("BMS SOH %", "BMS SOH %"),
                         "capacity_ah": t("容量 Ah", "capacity Ah"), "resistance_mohm": t("内阻 mΩ", "resistance mΩ"),
                         "fade": t("衰减 %/100次", "fade %/100 cycles"),
                         "cycles_to_70": t("距 70% 循环数", "cycles to 70 %"),
                         "retention": t("荷电保持 %", "retention %"), "efficiency": t("效率 %", "efficiency %"),
                         "uses": t("充电次数", "charges"), "grade": t("等级", "grade"),
                         "limits": t("越限项", "limits crossed")},
                 overrides=[_pack_life_link("battery")])


def pack_soh() -> Panel:
    query = f'SELECT "soh_pct" AS "soh", "soh_bms_pct" AS "soh_bms" FROM "battery_health" WHERE {PACK} AND $timeFilter'
    return timeseries(t("电池 SOH：实测与 BMS", "Pack SOH: measured and BMS"),
                      t("所选电池每次分析的实测 SOH 与其 BMS 自报 SOH。",
                        "The selected pack's measured SOH at each analysis, beside the SOH its BMS reports."),
                      [influx(query, alias="$col")], unit="percent", w=12)


def pack_capacity() -> Panel:
    query = ('SELECT "capacity_ah" FROM "charge_session" WHERE "battery_id" = \'$battery\' AND $timeFilter '
             'AND "capacity_ah" > 0')
    return timeseries(t("电池容量（每次充满）", "Pack capacity per full charge"),
                      t("所选电池每次充满时由安时积分测得的容量（两个 SOC 锚点之间）。",
                        "The selected pack's capacity measured by coulomb counting at each full charge (between two "
                        "SOC anchors)."),
                      [influx(query, alias=t("容量", "capacity"))], unit="amph", w=12)


def pack_resistance() -> Panel:
    query = f'SELECT "resistance_mohm" FROM "battery_health" WHERE {PACK} AND $timeFilter'
    return timeseries(t("电池内阻", "Pack resistance"),
                      t("所选电池电流阶跃处 ΔV/ΔI 得出的直流内阻（采样间隔尺度）。",
                        "The selected pack's DC resistance from ΔV/ΔI at current steps (at the sample interval)."),
                      [influx(query, alias=t("内阻", "resistance"))], unit="mohm", w=12)


def pack_sessions() -> Panel:
    query = ('SELECT "cycles", "charge_ah", "energy_in_wh", "soc_start_pct", "soc_end_pct", "temperature_max_c", '
             '"reason", "capacity_ah", "place" FROM "charge_session" WHERE "battery_id" = \'$battery\' '
             'AND $timeFilter')
    return table(t("电池充电记录", "Pack charge sessions"),
                 t("所选电池的每次充电：循环数、充入安时与能量、起止 SOC、最高温度、结束原因、测得容量、位置。",
                   "Each charge of the selected pack: cycles, Ah and energy in, SOC at start and end, hottest "
                   "temperature, why it ended, capacity measured, where."),
                 [influx(query, table_format=True)], w=12, h=10, sort_by="Time",
                 labels={"cycles": t("循环数", "cycles"), "charge_ah": t("充入 Ah", "Ah in"),
                         "energy_in_wh": t("充入 Wh", "Wh in"), "soc_start_pct": t("起始 SOC", "SOC start"),
                         "soc_end_pct": t("结束 SOC", "SOC end"), "temperature_max_c": t("最高温度 °C", "max °C"),
                         "reason": t("结束原因", "ended"), "capacity_ah": t("容量 Ah", "capacity Ah"),
                         "place": t("位置", "where")})


def cabinet_energy() -> Panel:
    query = ('SELECT count("charge_ah") AS "charges", sum("energy_in_wh") / 1000 AS "energy_kwh", '
             'sum("charge_ah") AS "charge_ah" FROM "charge_session" WHERE "kind" = \'cabinet\' AND $timeFilter '
             'GROUP BY "site", "place"')
    return table(t("各换电柜的充电次数与能量", "Charges and energy per cabinet"),
                 t("时间范围内每个换电柜完成的充电次数、充入能量与安时（P-5.4 使用次数与充放电量）。",
                   "Charges each cabinet did in the range, with the energy and Ah put in (P-5.4 use count and "
                   "energy)."),
                 [influx(query, table_format=True)], w=12, h=10, sort_by="energy_kwh",
                 labels={"site": t("站点", "site"), "place": t("换电柜", "cabinet"), "charges": t("充电次数", "charges"),
                         "energy_kwh": t("能量 kWh", "energy kWh"), "charge_ah": t("安时 Ah", "Ah")})


def grading_alerts() -> Panel:
    query = ('SELECT "site", "cabinet", "slot", "rule", "battery", "value", "summary", "action" FROM "alert" '
             'WHERE "rule" =~ /^battery_(restrict|retire)$/ AND $timeFilter')
    return table(t("分级告警", "Grading alerts"),
                 t("电池越过分级限值时发出的 1 级告警（推送到运营人员 App）。",
                   "The level-1 alerts raised when a pack crossed a grading limit (sent to the operator's app)."),
                 [influx(query, table_format=True)], w=24, h=8, sort_by="Time",
                 labels={"site": t("站点", "site"), "cabinet": t("位置", "where"), "slot": t("仓位", "slot"),
                         "rule": t("规则", "rule"), "battery": t("电池编号", "battery"), "value": "SOH %",
                         "summary": t("摘要", "summary"), "action": t("建议", "action")},
                 overrides=[_pack_life_link("battery")])


def build_second_life() -> dict[str, Any]:
    battery = influx_variable("battery", t("电池", "Battery"), 'SHOW TAG VALUES FROM "battery_health" WITH KEY = "battery"')
    return dashboard(
        UID, t("Cascade / 梯次利用电池健康", "Cascade / Second-life health"),
        t("实测容量、内阻与 SOH（与 BMS 自报值并列）、衰减趋势、梯次利用分级（P-5.1.1.3/4、D-4.2）与越限告警，"
          "由 cascade health analyse 计算。",
          "Measured capacity, resistance and SOH (beside the BMS's own), fade trends, second-life grades "
          "(P-5.1.1.3/4, D-4.2) and limit alerts, computed by cascade health analyse."),
        [grade_counts(), grade_by_site(), bms_disagrees(), health_ranking(), pack_soh(), pack_capacity(),
         pack_resistance(), pack_sessions(), cabinet_energy(), grading_alerts()],
        tags=["cascade", "noc", "health"], variables=[battery], refresh="1h", time_from="now-30d")
