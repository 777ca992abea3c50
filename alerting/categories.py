"""Alarm categories for regulators: the general alarm flags of GB/T 32960.3 (Table 18, vehicle battery
alarms) and, for what a swap cabinet adds (fire, gas, water, thermal-runaway precursors, device faults)
and the vehicle functions (anti-theft, reporting and clock), Cascade's own categories. Every alert point carries its rule's category as a tag (``category``), so the
regulator view totals alarms by category and level.

    >>> category_of("soc_jump"), CATEGORY_NAMES["soc_jump"]
    ('soc_jump', ('SOC jump', 'SOC跳变报警'))
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "CATEGORY_NAMES", "category_of"]

#: category → (English, Simplified Chinese). The first 14 are GB/T 32960.3 general alarm flags.
CATEGORY_NAMES: dict[str, tuple[str, str]] = {
    "temperature_difference": ("Temperature difference", "温度差异报警"),
    "battery_high_temperature": ("Battery high temperature", "电池高温报警"),
    "pack_over_voltage": ("Energy storage over-voltage", "车载储能装置类型过压报警"),
    "pack_under_voltage": ("Energy storage under-voltage", "车载储能装置类型欠压报警"),
    "soc_low": ("SOC low", "SOC低报警"),
    "cell_over_voltage": ("Cell over-voltage", "单体电池过压报警"),
    "cell_under_voltage": ("Cell under-voltage", "单体电池欠压报警"),
    "soc_high": ("SOC too high", "SOC过高报警"),
    "soc_jump": ("SOC jump", "SOC跳变报警"),
    "storage_mismatch": ("Energy storage mismatch", "可充电储能系统不匹配报警"),
    "cell_consistency": ("Poor cell consistency", "电池单体一致性差报警"),
    "insulation": ("Insulation", "绝缘报警"),
    "over_charge": ("Energy storage over-charge", "车载储能装置类型过充"),
    "over_current": ("Over-current or short circuit", "过流或短路报警"),
    # Cascade's categories for what a cabinet adds (P-5.2.2.2, P-5.2.2.3)
    "thermal_runaway": ("Thermal-runaway precursor", "热失控前兆报警"),
    "cabinet_fire": ("Fire, smoke or suppression", "火灾、烟雾或灭火报警"),
    "cabinet_gas": ("Cabinet gas", "柜内气体报警"),
    "water": ("Water ingress", "进水报警"),
    "device_fault": ("Device or monitoring fault", "设备或监测故障"),
    # ... and for the vehicle functions (swap-vehicle standard V-4.6, V-5.1, V-5.2, V-5.7, V-5.8)
    "vehicle_theft": ("Vehicle anti-theft", "车辆防盗报警"),
    "vehicle_reporting": ("Vehicle reporting or clock", "车辆数据上报或时钟异常"),
}
CATEGORIES = tuple(CATEGORY_NAMES)

_BY_RULE: dict[str, str] = {
    "cell_temperature_difference": "temperature_difference",
    "over_temperature": "battery_high_temperature", "temperature_above_ambient": "battery_high_temperature",
    "temperature_rise_rate": "battery_high_temperature", "bms_temperature": "battery_high_temperature",
    "charging_low_temperature": "battery_high_temperature",  # the flag covers the pack's temperature limits
    "pack_overvoltage": "pack_over_voltage",
    "pack_undervoltage": "pack_under_voltage", "bms_under_voltage": "pack_under_voltage",
    "soc_low": "soc_low", "soc_high": "soc_high", "soc_jump": "soc_jump",
    "cell_overvoltage": "cell_over_voltage", "cell_undervoltage": "cell_under_voltage",
    "handshake_failed": "storage_mismatch", "electrical_limits_unknown": "storage_mismatch",
    "cell_voltage_spread": "cell_consistency", "bms_cell_imbalance": "cell_consistency",
    "insulation_low": "insulation",
    "over_charge": "over_charge", "bms_over_charge": "over_charge",
    "over_current": "over_current", "bms_over_current": "over_current", "bms_short_circuit": "over_current",
    "thermal_runaway": "thermal_runaway", "safety_valve_event": "thermal_runaway", "h2_gas": "thermal_runaway",
    "h2_rise": "thermal_runaway", "voc_vapour": "thermal_runaway", "module_pressure": "thermal_runaway",
    "cabinet_flame": "cabinet_fire", "cabinet_smoke": "cabinet_fire", "fire_suppression_triggered": "cabinet_fire",
    "cabinet_over_temperature": "cabinet_fire",
    "cabinet_co": "cabinet_gas", "cabinet_co2": "cabinet_gas",
    "cabinet_water": "water", "charger_water_cutoff": "water",
    "wheel_motion_armed": "vehicle_theft", "geofence_exit": "vehicle_theft",
    "vehicle_low_soc": "soc_low", "discharge_protection": "pack_under_voltage", "chemistry_mismatch": "storage_mismatch",
    "clock_skew": "vehicle_reporting", "report_overdue": "vehicle_reporting",
    "vehicle_command_unacknowledged": "vehicle_reporting",  # the device did not answer a remote command
}


def category_of(rule: str) -> str:
    """The category of ``rule``; a rule not listed (a site's own rule, sensor and device faults, the
    service's cabinet_offline and protective_action_failed) is a device or monitoring fault."""
    return _BY_RULE.get(rule, "device_fault")
