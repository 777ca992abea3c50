"""Every rule of the catalogue has a regulator's alarm category (GB/T 32960.3 general alarm flags, plus
Cascade's for what a cabinet adds), and every stored alert point carries it as a tag."""

from __future__ import annotations

from alerting.categories import CATEGORY_NAMES, category_of
from alerting.rules import load_rules
from core.events import AlertEvent
from exporters.influx.schema import alert_to_line

DEVICE_FAULTS = {"h2_sensor_lost", "pack_temperature_sensor_lost", "cabinet_temperature_sensor_lost",
                 "charger_cutoff", "bms_hardware_fault", "cabinet_device_fault"}


def test_every_rule_has_a_category_and_only_faults_fall_back() -> None:
    rules = load_rules()
    for rule_id in rules:
        assert category_of(rule_id) in CATEGORY_NAMES, rule_id
    fallen_back = {r for r in rules if category_of(r) == "device_fault"}
    assert fallen_back == DEVICE_FAULTS  # a new safety rule must be given its category on purpose
    assert all(zh and en for en, zh in CATEGORY_NAMES.values())


def test_alert_points_carry_the_category_tag() -> None:
    event = AlertEvent("soc_jump", "s1", "C1", 3, "notice", 1, 0, "raise", 14.0, "B1", timestamp_ns=1,
                       category=category_of("soc_jump"))
    assert alert_to_line(event).startswith("alert,cabinet=C1,category=soc_jump,")
