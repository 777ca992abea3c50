"""``cascade check-config``: the read plan (text and --json), and everything ``cascade run`` refuses
at start-up refused here too, as one line with exit 2 (never a traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cascade.cli import main
from collectors.modbus.profile import PROFILE_DIR


def _config(tmp_path: Path, *, perform: str = "[stop_charging, slot_cutoff]", profile: str = "reference-cabinet",
            alerting: bool = True) -> Path:
    path = tmp_path / "run.yaml"
    section = (f"alerting:\n  enabled: {'true' if alerting else 'false'}\n  state_file: {tmp_path}/a.json\n"
               f"  audit_file: {tmp_path}/audit.jsonl\n  alertmanager_url: null\n  actions: {{perform: {perform}}}\n")
    path.write_text(f"cabinets:\n  - {{id: C1, host: 127.0.0.1, port: 1502, profile: {profile}, slots: 12}}\n"
                    f"  - {{id: C2, host: 127.0.0.1, port: 1503, profile: {profile}, slots: 12}}\n"
                    f"metrics: {{port: 0}}\n{section}", encoding="utf-8")
    return path


def test_prints_the_read_plan_per_profile(tmp_path: Path, capsys) -> None:
    assert main(["check-config", "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "10 reads per poll (minimum 10), max_in_flight 1 for C1, C2" in out
    assert "    input         0 +14  cabinet: " in out and "input_voltage_v" in out
    assert ("commands: charge_current_limit, charge_schedule_end, charge_schedule_start, charge_temperature_limit, "
            "fault_reset, slot_output") in out
    assert "protective actions performed: slot_cutoff, stop_charging" in out


def test_the_pipelining_setting_shows_with_the_plan_and_past_a_polls_reads_is_called_no_gain(tmp_path: Path,
                                                                                           capsys) -> None:
    path = _config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("slots: 12}\n  - {id: C2", "slots: 12, max_in_flight: 8}"
                                                              "\n  - {id: C2").replace(
        "port: 1503, profile: reference-cabinet, slots: 12}", "port: 1503, profile: reference-cabinet, slots: 12, "
        "max_in_flight: 16}"), encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 0
    assert "max_in_flight 8/16 (more than a poll's reads: no gain) for C1, C2" in capsys.readouterr().out
    assert main(["check-config", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["read_plans"][0]["max_in_flight"] == [8, 16]


def test_json_read_plan_lists_every_read_and_field(tmp_path: Path, capsys) -> None:
    assert main(["check-config", "--config", str(_config(tmp_path)), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [plan] = doc["read_plans"]
    assert plan["cabinets"] == ["C1", "C2"] and plan["requests"] == len(plan["reads"]) == 10
    fields = [f for read in plan["reads"] for f in read["fields"]]
    assert "cabinet:input_voltage_v" in fields and "slot 12:voltage_v" in fields
    assert all(read["count"] <= 125 for read in plan["reads"])
    assert doc["alerting"]["perform"] == ["slot_cutoff", "stop_charging"]


def _profile_without_commands(tmp_path: Path) -> str:
    text = (PROFILE_DIR / "reference-cabinet.yaml").read_text(encoding="utf-8")
    head, _sep, _commands = text.partition("\ncommands:")
    path = tmp_path / "no-commands.yaml"
    path.write_text(head.replace("model: reference-cabinet", "model: no-commands") + "\n", encoding="utf-8")
    return str(path)


def test_a_protective_action_the_profile_cannot_perform_is_refused_at_start(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, profile=_profile_without_commands(tmp_path))
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "alerting.actions.perform" in err and "slot_output" in err and "no-commands" in err
    assert "perform: []" in err  # the fix


@pytest.mark.parametrize("change", [{"perform": "[]"}, {"alerting": False}])
def test_observe_only_or_alerting_off_needs_no_commands(tmp_path: Path, change: dict) -> None:
    config = _config(tmp_path, profile=_profile_without_commands(tmp_path), **change)
    assert main(["check-config", "--config", str(config)]) == 0


def test_run_refuses_what_check_config_refuses(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, profile=_profile_without_commands(tmp_path))
    assert main(["run", "--config", str(config)]) == 2
    assert "alerting.actions.perform" in capsys.readouterr().err


@pytest.mark.parametrize("text, key", [
    ("cabinets: [{id: C1, host: h, port: 1502}]\nalerting: {resend_interval_s: -1}\n", "alerting.resend_interval_s"),
    ("cabinets: [{id: C1, host: h, port: 1502}]\nalerting: {actions: {perform: [fire_suppression]}}\n",
     "alerting.actions.perform[0]"),
    ("cabinets: [{id: C1, host: h, port: true}]\n", "cabinets[0].port"),
    ("cabinets: [{id: C1, host: h, port: 1502, profile: nope}]\n", "cabinets[0].profile"),
    ("cabinets: [oops\n", "(file)"),
])
def test_every_error_is_one_line_with_exit_2(tmp_path: Path, capsys, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(path) in err and key in err and "Fix:" in err


def test_shipped_profiles_copied_elsewhere_still_plan(tmp_path: Path, capsys) -> None:
    copy = tmp_path / "volta.yaml"
    shutil.copy(PROFILE_DIR / "volta-s8.yaml", copy)
    config = tmp_path / "run.yaml"
    config.write_text(f"cabinets: [{{id: V1, host: h, port: 1502, profile: {copy}}}]\nalerting: {{enabled: false}}\n",
                      encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == 0
    assert "5 reads per poll (minimum 5), max_in_flight 1 for V1" in capsys.readouterr().out
