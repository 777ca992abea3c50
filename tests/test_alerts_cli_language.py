"""`cascade alerts` prints in the operators' language: Simplified Chinese by default, English by option."""

from __future__ import annotations

import argparse
import io

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
