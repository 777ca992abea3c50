"""``cascade-vehicle``: one vehicle over any time range (P-5.1.1.1): its route on a map, speed, odometer,
battery, arming and power, alarms and remote commands. Documented in docs/dashboards.md.

The route is the vehicle's reported positions in the dashboard's time range, joined in time order:
choosing a range (or zooming into the speed graph, which sets it) plays that stretch of the track back.
``cascade vehicle track`` exports the same positions as GeoJSON (docs/vehicles.md, "Tracks").

Registered in :data:`dashboards.build.DASHBOARDS` when the package is imported (``dashboards/__init__.py``).
"""

from __future__ import annotations

from typing import Any

from dashboards.build import (
    ALERT_COLUMNS,
    ALERT_LABELS,
    COMMAND_COLUMNS,
    COMMAND_LABELS,
    DASHBOARDS,
    _command_columns,
    _labels,
    _level_columns,
)
from dashboards.i18n import t
from dashboards.panels import (
    Panel,
    annotation,
    dashboard,
    geomap,
    influx,
    influx_variable,
    map_layer,
    override,
    right_axis,
    stat,
    table,
    timeseries,
)

__all__ = ["build_vehicle"]

VEHICLE = '"fleet" =~ /^$fleet$/ AND "vehicle" =~ /^$vehicle$/'
ON_VEHICLE = '"site" =~ /^$fleet$/ AND "cabinet" =~ /^$vehicle$/'  # alerts and commands: site = fleet, cabinet = vehicle


def vehicle_route() -> Panel:
    query = ('SELECT "latitude_deg" AS "latitude", "longitude_deg" AS "longitude", "speed_kmh" AS "speed" FROM '
             f'"vehicle" WHERE $timeFilter AND {VEHICLE}')
    return geomap(t("行驶轨迹", "Route"),
                  t("车辆在所选时间范围内上报的位置，按时间连成轨迹（箭头为行驶方向），圆点为每次上报；选择或缩放时间范围即回放"
                    "该段轨迹（P-5.1.1.1）。无定位的上报不在图上。",
                    "The vehicle's reported positions in the time range joined in time order (arrows: direction), "
                    "a dot per report; choose or zoom the time range to play that stretch back (P-5.1.1.1). "
                    "Reports without a position fix are not drawn."),
                  [influx(query, table_format=True)],
                  [map_layer("route", t("轨迹", "Route"), ref="A", color="blue", size=3, arrow=True),
                   map_layer("markers", t("上报点", "Reports"), ref="A", color="blue", size=4)],
                  w=16, h=14)


def vehicle_now() -> Panel:
    state = ('SELECT last("armed") AS "armed", last("powered_on") AS "power", last("speed_kmh") AS "speed", '
             f'last("odometer_km") AS "odometer" FROM "vehicle" WHERE $timeFilter AND {VEHICLE}')
    pack = ('SELECT last("soc_pct") AS "soc", last("temperature_c") AS "temperature", last("battery_id") AS '
            f'"battery_id" FROM "vehicle_battery" WHERE $timeFilter AND {VEHICLE}')
    yes_no = [{"type": "value", "options": {
        "true": {"text": t("是", "yes"), "color": "green", "index": 0},
        "false": {"text": t("否", "no"), "color": "text", "index": 1}}}]
    panel = stat(t("最新状态", "Latest state"),
                 t("时间范围内最后一次上报的设防状态（V-5.5）、电源、车速、总里程，以及所装电池的编号、SOC 与温度。",
                   "At the last report in the time range: arming (V-5.5), power, speed, odometer, and the mounted "
                   "battery's id, SOC and temperature."),
                 [influx(state, table_format=True), influx(pack, ref="B", table_format=True)], unit="none", w=8,
                 h=14)
    panel["options"]["reduceOptions"]["fields"] = "/.*/"
    panel["options"]["orientation"] = "horizontal"
    panel["fieldConfig"]["overrides"] = [
        override("armed", mappings=yes_no, displayName=t("已设防", "Armed")),
        override("power", mappings=yes_no, displayName=t("已上电", "Powered on")),
        override("speed", unit="velocitykmh", displayName=t("车速", "Speed")),
        override("odometer", unit="lengthkm", decimals=1, displayName=t("总里程", "Odometer")),
        override("soc", unit="percent", displayName="SOC"),
        override("temperature", unit="celsius", displayName=t("电池温度", "Battery temperature")),
        override("battery_id", displayName=t("电池编号", "Battery id"))]
    return panel


def vehicle_speed() -> Panel:
    query = f'SELECT mean("speed_kmh") FROM "vehicle" WHERE $timeFilter AND {VEHICLE} GROUP BY time($__interval) fill(null)'
    return timeseries(t("车速", "Speed"), t("上报的车速（每个时间间隔的平均值）；框选一段可缩放时间范围并回放该段轨迹。",
                                          "Reported speed (mean per interval); drag across it to zoom the time "
                                          "range and play that stretch of the route back."),
                      [influx(query, alias=t("车速", "speed"))], unit="velocitykmh", w=12, h=7,
                      axis_label=t("车速", "speed"))


def vehicle_odometer() -> Panel:
    query = (f'SELECT max("odometer_km") FROM "vehicle" WHERE $timeFilter AND {VEHICLE} '
             'GROUP BY time($__interval) fill(null)')
    return timeseries(t("总里程", "Odometer"), t("上报的总里程。", "Reported odometer."),
                      [influx(query, alias=t("总里程", "odometer"))], unit="lengthkm", w=12, h=7,
                      axis_label=t("里程", "distance"))


def vehicle_battery() -> Panel:
    soc = (f'SELECT mean("soc_pct") FROM "vehicle_battery" WHERE $timeFilter AND {VEHICLE} '
           'GROUP BY time($__interval) fill(null)')
    temperature = (f'SELECT max("temperature_c") FROM "vehicle_battery" WHERE $timeFilter AND {VEHICLE} '
                   'GROUP BY time($__interval) fill(null)')
    return timeseries(t("电池 SOC 与温度", "Battery SOC and temperature"),
                      t("所装电池的 SOC（左轴，%）与电池温度（右轴，°C）；换电后为新电池的数值。",
                        "SOC of the mounted pack on the left axis (%), its temperature on the right (°C); after a "
                        "swap, the new pack's."),
                      [influx(soc, alias="SOC"), influx(temperature, ref="B", alias=t("电池温度", "temperature"))],
                      unit="percent", w=12, h=7, axis_label="SOC",
                      overrides=[right_axis("B", "celsius", t("温度", "temperature"))])


def vehicle_power_and_arming() -> Panel:
    query = ('SELECT last("armed") AS "armed", last("powered_on") AS "power" FROM "vehicle" WHERE $timeFilter AND '
             f'{VEHICLE} GROUP BY time($__interval) fill(previous)')
    return timeseries(t("设防与电源", "Arming and power"),
                      t("设防（1 已设防，0 撤防）与电源（1 上电，0 断电）随时间的变化；远程命令的效果在此可见。",
                        "Armed (1) or disarmed (0) and powered on (1) or off (0) over time; remote commands show "
                        "here."), [influx(query, alias="$col")], unit="bool", w=12, h=7,
                      axis_label=t("状态", "state"))


def vehicle_alarms() -> Panel:
    query = (f'SELECT {ALERT_COLUMNS} FROM "alert" WHERE $timeFilter AND {ON_VEHICLE} ORDER BY time DESC LIMIT 500')
    return table(t("车辆报警", "Alarms"),
                 t("该车辆（及其电池）的每次告警等级变化、诊断与处置建议，含远程命令未确认告警。",
                   "Every alert level change of this vehicle and its battery, with diagnosis and action, "
                   "unacknowledged remote commands included."),
                 [influx(query, table_format=True)], h=9, overrides=_level_columns(), labels=_labels(*ALERT_LABELS))


def vehicle_commands() -> Panel:
    query = f'SELECT {COMMAND_COLUMNS} FROM "command" WHERE $timeFilter AND {ON_VEHICLE} ORDER BY time DESC LIMIT 500'
    return table(t("远程命令", "Remote commands"),
                 t("下发给该车辆的每条远程命令（上电/断电、电机锁定/解锁、设防/撤防）、发起方、车辆回读的状态与结果（V-5.4）。",
                   "Every remote command sent to this vehicle (power, motor lock, arming), who asked, the state "
                   "the vehicle read back and the result (V-5.4)."),
                 [influx(query, table_format=True)], h=8, overrides=_command_columns(), labels=_labels(*COMMAND_LABELS))


def build_vehicle() -> dict[str, Any]:
    fleet = influx_variable("fleet", t("车队", "Fleet"), 'SHOW TAG VALUES FROM "vehicle" WITH KEY = "fleet"')
    vehicle = influx_variable("vehicle", t("车辆", "Vehicle"),
                              'SHOW TAG VALUES FROM "vehicle" WITH KEY = "vehicle" WHERE "fleet" =~ /^$fleet$/')
    alarms = annotation(t("报警", "Alarms"), 'SELECT "summary", "level", "rule", "severity", "kind" FROM "alert" '
                        f'WHERE $timeFilter AND {ON_VEHICLE}', color="red")
    return dashboard(
        "cascade-vehicle", t("Cascade / 单车", "Cascade / Vehicle"),
        t("一辆车在任意时间范围内的轨迹回放、车速、里程、电池、设防与电源、报警与远程命令。",
          "One vehicle over any time range: route playback, speed, odometer, battery, arming and power, alarms "
          "and remote commands."),
        [vehicle_route(), vehicle_now(), vehicle_speed(), vehicle_odometer(),
         vehicle_battery(), vehicle_power_and_arming(), vehicle_alarms(), vehicle_commands()],
        tags=["cascade", "noc"], variables=[fleet, vehicle], annotations=[alarms], time_from="now-6h", refresh="1m")


DASHBOARDS["cascade-vehicle"] = lambda _rules: build_vehicle()
