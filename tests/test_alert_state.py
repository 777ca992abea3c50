"""Alert lifecycle: persistence across restart (P-8.4), acknowledgement policy, roll-up
battery → slot → cabinet → site, bounded history."""

from __future__ import annotations

import json
import os

import pytest

from alerting.state import AlertKey, AlertStore, Target, Transition

T0 = 1_700_000_000.0


def tr(rule, to, frm=0, *, slot=1, cabinet="c1", site="s1", battery="B1", at=T0):
    kind = "clear" if to == 0 else "raise" if frm == 0 else "escalate" if to > frm else "deescalate"
    return Transition(rule, Target(site, cabinet, slot, battery), frm, to, kind, 1.0, at,
                      "diag", "act", None, {"alertname": rule, "level": str(to or frm)}, {})


def test_state_survives_restart_and_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "state" / "alerts.json"
    store = AlertStore(path)
    store.apply([tr("over_temperature", 2), tr("cabinet_smoke", 3, slot=None)])
    store.acknowledge(AlertKey("over_temperature", "s1", "c1", 1), "noc-bob", "looking", when=T0 + 5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["alerts.json"]  # no temp files left
    again = AlertStore(path)
    a = again.get("over_temperature@s1/c1/1")
    assert a.level == 2 and a.battery == "B1" and a.ack.who == "noc-bob" and a.ack.level == 2
    assert again.get(AlertKey("cabinet_smoke", "s1", "c1", None)).level == 3
    assert [h["event"] for h in again.history()] == ["transition", "transition", "ack"]
    assert json.loads(path.read_text())["version"] == 1


def test_ack_survives_deescalation_but_escalation_reopens():
    store = AlertStore()
    key = "h2_gas@s1/c1/1"
    store.apply([tr("h2_gas", 2)])
    store.acknowledge(key, "noc-bob", "ventilating")
    store.apply([tr("h2_gas", 1, 2)])
    assert store.get(key).acknowledged
    store.apply([tr("h2_gas", 3, 1)])
    assert not store.get(key).acknowledged
    store.apply([tr("h2_gas", 0, 3)])
    assert store.get(key) is None
    with pytest.raises(KeyError):
        store.acknowledge(key, "noc-bob")
    with pytest.raises(ValueError):
        AlertStore().acknowledge(key, " ")


def test_rollup_battery_slot_cabinet_site():
    store = AlertStore()
    store.apply([
        tr("soc_low", 1, slot=1, battery="B1"),
        tr("over_temperature", 3, slot=2, battery="B2"),
        tr("cabinet_co", 2, slot=None, battery=None),
        tr("soc_low", 1, slot=1, cabinet="c2", battery="B7"),
        tr("soc_low", 2, slot=1, site="s2", battery="B8"),
    ])
    assert store.worst_level() == 3
    assert store.worst_level(site="s1") == 3
    assert store.worst_level(site="s1", cabinet="c2") == 1
    assert store.worst_level(site="s1", cabinet="c1", slot=1) == 1
    assert store.worst_level(battery="B2") == 3
    assert store.worst_level(site="nowhere") == 0
    up = store.rollup()
    assert up["s1"]["level"] == 3
    assert up["s1"]["cabinets"]["c1"] == {"level": 3, "slots": {1: 1, 2: 3}}
    assert up["s2"]["level"] == 2
    assert [a.level for a in store.active()] == [3, 2, 2, 1, 1]


def test_history_is_bounded():
    store = AlertStore(history_limit=5)
    for i in range(20):
        store.apply([tr("soc_jump", 1, slot=i)])
    assert len(store.history()) == 5
    assert store.history(limit=2)[-1]["key"] == "soc_jump@s1/c1/19"


def test_corrupt_state_file_is_set_aside_and_store_starts_empty(tmp_path):
    path = tmp_path / "alerts.json"
    path.write_text("{not json")
    store = AlertStore(path)
    assert store.active() == []
    assert any(p.name.startswith("alerts.json.corrupt-") for p in tmp_path.iterdir())
    store.apply([tr("h2_gas", 1)])
    assert AlertStore(path).worst_level() == 1


def test_alert_key_round_trip():
    for key in (AlertKey("r", "s", "c", 3), AlertKey("r", "s", "c", None)):
        assert AlertKey.parse(str(key)) == key
    with pytest.raises(ValueError):
        AlertKey.parse("garbage")


@pytest.mark.parametrize("content", [
    "[]", "null", '"alerts"', "42",
    '{"version": 1, "alerts": {}}',
    '{"version": 1, "alerts": [[]]}',
    '{"version": 1, "alerts": [{"key": "h2_gas@s1/c1/1"}]}',
    '{"version": 1, "alerts": [{"key": ["h2_gas", "s1", "c1", 1], "level": 7, "raised_at": 1, "updated_at": 1}]}',
    '{"version": 1, "alerts": [{"key": ["h2_gas", "s1", "c1", 1], "level": 2, "raised_at": 1e400, "updated_at": 1}]}',
    '{"version": 1, "alerts": [{"key": ["h2_gas", "s1", "c1", 1], "level": 2, "raised_at": 1, "updated_at": 1, '
    '"ack": {"who": "x", "nope": 1}}]}',
    '{"version": 1, "alerts": [{"key": ["h2_gas", "s1", "c1", 1], "level": 2, "raised_at": 1, "updated_at": 1, '
    '"labels": ["level"]}]}',
    '{"version": 1, "alerts": [], "history": "x"}',
    '{"version": 1, "alerts": [], "history": [1, 2]}',
    "[" * 100_000 + "]" * 100_000,
])
def test_malformed_state_file_of_any_shape_is_set_aside_and_store_starts_empty(tmp_path, caplog, content):
    """P-8.4: a state file of the wrong shape must not stop the process from starting."""
    path = tmp_path / "alerts.json"
    path.write_text(content)
    store = AlertStore(path)
    assert store.active() == [] and store.history() == []
    assert [p.name.startswith("alerts.json.corrupt-") for p in tmp_path.iterdir()] == [True]
    assert "unreadable" in caplog.text and "starting empty" in caplog.text
    store.apply([tr("h2_gas", 1)])
    assert AlertStore(path).worst_level() == 1


def test_a_valid_state_file_round_trips_every_field(tmp_path):
    path = tmp_path / "alerts.json"
    store = AlertStore(path)
    store.apply([tr("h2_gas", 2), tr("cabinet_smoke", 3, slot=None, battery=None)])
    store.acknowledge("h2_gas@s1/c1/1", "noc-bob", "venting", when=T0 + 1)
    again = AlertStore(path)
    assert [a.to_dict() for a in again.active()] == [a.to_dict() for a in store.active()]
    assert not any(p.name.endswith(tuple("0123456789")) for p in tmp_path.iterdir())  # nothing set aside


def test_a_burst_of_transitions_is_written_coalesced_and_flushed(tmp_path):
    path = tmp_path / "alerts.json"
    store = AlertStore(path, save_interval_s=3600)
    for i in range(1000):  # e.g. a site-wide event: 1,000 readings with a transition each
        store.apply([tr("h2_gas", 1, slot=i)])
    assert store.saves == 1  # the first batch at once, the rest wait for the interval
    assert len(json.loads(path.read_text())["alerts"]) == 1
    store.flush()
    assert store.saves == 2 and AlertStore(path).worst_level() == 1
    assert len(AlertStore(path).active()) == 1000


def test_coalesced_changes_are_written_by_the_timer(tmp_path):
    import time

    path = tmp_path / "alerts.json"
    store = AlertStore(path, save_interval_s=0.05)
    store.apply([tr("h2_gas", 1)])
    store.apply([tr("h2_gas", 2, 1)])  # within the interval: waits for the timer
    deadline = time.monotonic() + 5
    # The timer thread writes the file, then counts the save: wait for both (no race on a busy machine).
    while (AlertStore(path).worst_level() != 2 or store.saves != 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert AlertStore(path).worst_level() == 2 and store.saves == 2


def test_without_an_interval_every_batch_is_on_disk_when_apply_returns(tmp_path):
    path = tmp_path / "alerts.json"
    store = AlertStore(path)
    for level in (1, 2, 3):
        store.apply([tr("h2_gas", level, level - 1)])
        assert AlertStore(path).worst_level() == level
    with pytest.raises(ValueError, match="save_interval_s"):
        AlertStore(path, save_interval_s=-1)


def test_a_failed_write_keeps_alerts_in_memory_and_is_retried(tmp_path, monkeypatch, caplog):
    path = tmp_path / "alerts.json"
    store = AlertStore(path)
    real_replace = os.replace

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    store.apply([tr("h2_gas", 2)])  # must not raise: alerting goes on
    assert store.worst_level() == 2 and "not written" in caplog.text
    assert not path.exists() and list(tmp_path.iterdir()) == []  # no temp file left behind
    monkeypatch.setattr(os, "replace", real_replace)
    store.apply([tr("h2_gas", 3, 2)])
    assert AlertStore(path).worst_level() == 3
