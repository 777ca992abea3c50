"""`cascade alerts` prints in the operators' language: Simplified Chinese by default, English by option."""

from __future__ import annotations

import argparse
import io

import pytest

from alerting import cli

DOC = {"alerts": [{"key": "over_temperature@site-01/C0003/5", "level": 3, "raised_at": 1_700_000_000.0,
                   "ack": None, "annotations": {"diagnosis": "电池温度 85.2 °C", "action": "切断该仓输出"}}]}


def _run(language: str, monkeypatch) -> str:
    monkeypatch.setattr(cli, "_call", lambda *a, **k: DOC)
    out = io.StringIO()
    args = argparse.Namespace(url="http://127.0.0.1:1", json=False, token=None, language=language,
                              alerts_command="list")
    assert cli.main(args, out=out) == 0
    return out.getvalue()


def test_the_alert_list_is_chinese_by_default_and_english_by_option(monkeypatch) -> None:
    zh = _run("zh_CN", monkeypatch)
    assert "严重" in zh and "未确认" in zh and "诊断: 电池温度" in zh and "处置: 切断该仓输出" in zh
    en = _run("en", monkeypatch)
    assert "CRITICAL" in en and "NOT ACKNOWLEDGED" in en and "diagnosis: " in en


# -- global options after the sub-command (finding 8) ---------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    from cascade.cli import main as _  # noqa: F401 - the real `cascade alerts` wiring uses add_arguments too

    parser = argparse.ArgumentParser(prog="cascade alerts")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_global_options_go_before_or_after_the_sub_command(monkeypatch) -> None:
    monkeypatch.delenv("CASCADE_LANGUAGE", raising=False)
    assert _parse("list").language == "zh_CN" and _parse("list").json is False
    assert _parse("list", "--language", "en").language == "en"
    assert _parse("--language", "en", "list").language == "en"
    args = _parse("--url", "http://h:1", "command", "C0003", "start_charging", "--slot", "5", "--reason", "x",
                  "--confirm", "--json", "--token", "T")
    assert (args.json, args.url, args.token, args.confirm, args.slot) == (True, "http://h:1", "T", True, 5)
    # Given before only: kept (the sub-command's copy has no default of its own).
    assert _parse("--json", "--token", "T", "rollup").json is True and _parse("--token", "T", "rollup").token == "T"


def test_the_cascade_command_line_accepts_them_after_the_sub_command(monkeypatch, capsys) -> None:
    from cascade.cli import main as cascade_main

    seen: list[tuple[str, dict]] = []

    def call(method, url, body=None, token=None):
        seen.append((cli._texts.language, body))
        return {"alerts": []}
    monkeypatch.setattr(cli, "_call", call)
    assert cascade_main(["alerts", "list", "--language", "en", "--json"]) == 0
    assert seen[-1][0] == "en" and '"alerts": []' in capsys.readouterr().out


# -- the server's refusals in the caller's language, with a code (finding 6) ---------------------------------

SITE, CAB = "site-01", "C0003"


class _Commander:
    def slot_count(self, device: str) -> int | None:
        return 8 if device == CAB else None

    async def command(self, *args, **kwargs):  # never reached: every request below is refused first
        raise AssertionError("a refused command was sent")


def _app(tmp_path):
    from aiohttp import web

    from alerting.auth import ApiAuth
    from alerting.engine import Engine
    from alerting.rules import load_rules
    from alerting.service import CABINET_OFFLINE, AlertService
    from alerting.state import AlertKey, AlertStore
    from core.auth import Principal

    class Operator(ApiAuth):
        async def require(self, request, permission):  # a person's token with the operator role
            return Principal("alice", frozenset({"operator"}), "jwt")

    engine = Engine(load_rules().only(["over_temperature"]), state=AlertStore(tmp_path / "alerts.json"),
                    audit_path=tmp_path / "audit.jsonl")
    service = AlertService(engine, commander=_Commander(), cabinets=[(SITE, CAB)], alertmanager_url=None)
    service.offline[AlertKey(CABINET_OFFLINE, SITE, CAB, None)] = 0.0  # blocks start_charging (409)
    app = web.Application()
    from alerting.api import add_routes
    add_routes(app, service, auth=Operator())
    return app


async def test_api_refusals_are_chinese_by_default_english_on_request_and_carry_a_code(tmp_path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(_app(tmp_path))) as client:
        async def post(path: str, body, language: str | None = None, content_type: str = "application/json"):
            headers = {"Content-Type": content_type, **({"Accept-Language": language} if language else {})}
            data = body if isinstance(body, str) else __import__("json").dumps(body)
            resp = await client.post(path, data=data, headers=headers)
            return resp.status, await resp.json()

        command = f"/api/cabinets/{CAB}/commands"
        cases = [
            (command, {"command": "start_charging", "slot": 5, "reason": "x", "confirm": True}, 409, "unsafe_now",
             "is not re-energised", "不会重新通电"),
            (command, {"command": "start_charging", "slot": 5, "reason": "x"}, 400, "confirm_needed",
             "--confirm", "--confirm"),
            (command, {"command": "self_destruct", "reason": "x"}, 400, "unknown_command",
             "unknown command 'self_destruct'", "未知命令 'self_destruct'"),
            ("/api/alerts/nonexistent@x/y/ack", {"who": "a"}, 404, "unknown_alert", "no active alert", "没有活动告警"),
            ("/api/alerts/nonexistent@x/y/ack", "who=a", 415, "unsupported_media_type", "Content-Type", "请以 JSON"),
            ("/api/alerts/nonexistent@x/y/ack", "not json", 400, "not_json", "body is not JSON", "请求体不是 JSON"),
            ("/api/alerts/nonexistent@x/y/ack", {"who": 5}, 400, "wrong_type", "'who' must be a string",
             "'who' 必须是字符串"),
        ]
        for path, body, status, code, english, chinese in cases:
            ctype = "text/plain" if code == "unsupported_media_type" else "application/json"
            for language, expected in ((None, chinese), ("zh-CN,zh;q=0.9", chinese), ("en", english)):
                got_status, got = await post(path, body, language, ctype)
                assert (got_status, got["code"]) == (status, code), (path, body, got)
                assert expected in got["error"], (language, got)
                assert english in got["detail"], got  # the English detail, whatever the language
        # The CLI asks in its --language: the confirm refusal names the CLI's flag either way.
        _, got = await post(command, {"command": "start_charging", "slot": 5, "reason": "x"})
        assert "cascade alerts command" in got["error"] and "会改变换电柜的充电方式" in got["error"]


def test_the_cli_asks_for_its_language_and_prints_the_refusal_as_received(monkeypatch, capsys) -> None:
    import urllib.error
    import urllib.request

    asked: list[str | None] = []

    def refuse(request, timeout):
        asked.append(request.get_header("Accept-language"))
        body = io.BytesIO('{"error": "没有活动告警 \'x@y/z\'", "code": "unknown_alert"}'.encode())
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, body)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert cli.run(["--url", "http://127.0.0.1:1", "ack", "x@y/z", "--who", "a"]) == 1
    assert "没有活动告警 'x@y/z' (HTTP 404)" in capsys.readouterr().err
    assert cli.run(["--url", "http://127.0.0.1:1", "ack", "x@y/z", "--who", "a", "--language", "en"]) == 1
    assert asked == ["zh-CN", "en"]


async def test_the_missing_token_hint_names_the_role_the_refused_action_needs() -> None:
    import json

    import pytest
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from alerting.auth import ApiAuth
    from core.auth import ACK, CHARGING, CONTROL, THRESHOLDS

    shared = ApiAuth(api_token="s3cret")  # the deprecated shared token: changes need it
    for permission, role in ((ACK, "operator"), (THRESHOLDS, "engineer")):
        with pytest.raises(web.HTTPUnauthorized) as caught:
            await shared.require(make_mocked_request("POST", "/api/x", headers={"Accept-Language": "en"}), permission)
        body = json.loads(caught.value.text)
        assert body["code"] == "missing_token" and f"cascade token --role {role} " in body["error"], body
    opened = ApiAuth()  # no auth configured: control still needs a person's token, with the right role
    for permission, role in ((CHARGING, "operator"), (CONTROL, "engineer")):
        with pytest.raises(web.HTTPUnauthorized) as caught:
            await opened.require(make_mocked_request("POST", "/api/x"), permission)
        body = json.loads(caught.value.text)
        assert body["code"] == "needs_person" and f"带 {role} 角色" in body["error"], body


def test_actions_show_a_dash_for_what_is_missing_or_hidden_never_none(monkeypatch) -> None:
    actions = {"actions": [
        {"at": 1_700_000_000.0, "result": "ok", "action": "stop_charging", "site": "site-01", "cabinet": "C0001",
         "slot": 1, "command": "slot_output", "value": 0, "readback": 0, "actor": None, "error": None},
        {"at": 1_700_000_001.0, "result": "failed", "action": "fault_reset", "site": "site-01", "cabinet": "C0001",
         "slot": None, "command": "fault_reset", "value": 1, "readback": None, "actor": "user:bob",
         "error": "profile reference-cabinet has no command 'fault_reset'; it has ['slot_output']"}]}
    monkeypatch.setattr(cli, "_call", lambda *a, **k: actions)
    for language in ("zh_CN", "en"):
        out = io.StringIO()
        args = argparse.Namespace(url="http://127.0.0.1:1", json=False, token=None, language=language,
                                  alerts_command="actions", limit=20)
        assert cli.main(args, out=out) == 0
        text = out.getvalue()
        assert "None" not in text, text
        assert ("1号仓" in text and "回读 0（-）" in text) if language == "zh_CN" else "slot 1" in text
        assert "has no command 'fault_reset'" in text and "\"profile" not in text


# -- second fresh-clone run: times in the messages' zone, --who with a token, the token's --ttl ----------------


def test_times_are_shown_in_beijing_time_by_default_and_in_the_zone_asked_for(monkeypatch) -> None:
    monkeypatch.delenv("CASCADE_TIMEZONE", raising=False)
    monkeypatch.setenv("TZ", "UTC")  # the machine's own zone does not matter
    beijing = _run("en", monkeypatch)  # raised_at 1_700_000_000 = 2023-11-14 22:13:20 UTC
    assert "since 2023-11-15 06:13:20" in beijing
    assert _parse("list").timezone == "Asia/Shanghai" and _parse("list", "--timezone", "UTC").timezone == "UTC"
    monkeypatch.setattr(cli, "_call", lambda *a, **k: DOC)
    out = io.StringIO()
    assert cli.main(_parse("--language", "en", "list", "--timezone", "UTC"), out=out) == 0
    assert "since 2023-11-14 22:13:20" in out.getvalue()
    monkeypatch.setenv("CASCADE_TIMEZONE", "Europe/Berlin")
    assert _parse("list").timezone == "Europe/Berlin"  # configurable like notifier.timezone
    with pytest.raises(SystemExit):
        _parse("list", "--timezone", "Mars/Olympus")


def test_who_given_with_a_personal_token_is_warned_about_not_silently_dropped(monkeypatch, capsys) -> None:
    recorded = {"key": "over_temperature@site-01/C0003/5", "level": 3,
                "ack": {"who": "alice", "at": 1_700_000_000.0, "comment": ""}}
    sent: list[dict] = []

    def call(method, url, body=None, token=None):
        sent.append(body)
        return recorded

    monkeypatch.setattr(cli, "_call", call)
    args = _parse("--language", "en", "--token", "T", "ack", recorded["key"], "--who", "bob")
    assert cli.main(args, out=io.StringIO()) == 0
    err = capsys.readouterr().err
    assert "recorded as alice (the token's subject); --who bob was not used" in err
    assert cli.main(_parse("--token", "T", "ack", recorded["key"], "--who", "alice"), out=io.StringIO()) == 0
    assert capsys.readouterr().err == ""  # the same person: nothing to say
    assert cli.main(_parse("--token", "T", "ack", recorded["key"], "--who", "bob"), out=io.StringIO()) == 0
    assert "记录为 alice（令牌的主体）；未使用 --who bob" in capsys.readouterr().err


def test_the_ttl_refusal_says_days_are_accepted(tmp_path, capsys) -> None:
    from cascade.cli import main as cascade_main

    key = tmp_path / "keys.json"
    assert cascade_main(["token", "--role", "operator", "--sub", "x", "--ttl", "a month", "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "--ttl 'a month' is not a duration" in err and "30d" in err and "d days" in err
    assert cascade_main(["token", "--role", "operator", "--sub", "x", "--ttl", "30d", "--key", str(key)]) == 0
