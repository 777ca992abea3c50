"""Simplified Chinese by default, English by option, from one message catalogue (locale/).

The catalogue is checked like generated code (up to date, every text translated, placeholders
kept); every catalogue rule is rendered at every level in both languages, through the engine's
text functions and the notifier's channel texts, and the pages are checked for what a person
needs: level, place, what with value and unit, battery, what to do, a human time; and, for the
voice, nothing that cannot be heard (codes, ids, symbols, the place twice).
"""

from __future__ import annotations

import datetime as dt
import re
import string

import pytest
from babel.messages.pofile import read_po

from alerting import catalogue_i18n
from alerting.engine import render_annotations
from alerting.i18n import LANGUAGES, LOCALE_DIR, AlertTexts, for_level, normalize_language
from alerting.rules import load_rules, parse_rules
from alerting.state import alert_labels
from notifier import ConfigError, parse_config
from notifier.i18n import Texts
from notifier.messages import MESSAGE_FIELDS, compose, format_time, headline
from notifier.templates import TemplateError, compile_template
from notifier.webhook import WebhookAlert
from tests.test_notifier import ENV, make_config, payload, provider, start_notifier  # noqa: F401 - fixtures

CATALOGUE = load_rules()
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
SITE, CABINET, SLOT, BATTERY = "site-01", "C0003", 5, "NM48-TEST0001"
STARTS = "2026-12-06T14:04:53.123456789Z"  # Alertmanager's RFC 3339 with nanoseconds
CJK = re.compile(r"[\u4e00-\u9fff]")
CODES = re.compile(r"(?<![A-Za-z0-9])(?:[PDV]-\d|D-B\.|GB/T)")
# SMS: 70 characters per single UCS-2 message, 67 per segment of a long one.
TWO_SEGMENTS = 2 * 67


def _fields(text: str) -> dict[str, str]:
    return {name: spec for _, name, spec, _ in string.Formatter().parse(text) if name is not None}


def _catalog(language: str):
    with open(LOCALE_DIR / language / "LC_MESSAGES" / "cascade.po", "rb") as f:
        return read_po(f, locale=language)


def _annotations(rule, level: int, language: str, value: float | None = None) -> dict[str, str]:
    lv = next(lv for lv in rule.levels if lv.level == level)
    if value is None:
        value = lv.threshold * 1.05 if lv.threshold else 1.0
    sid = SLOT if rule.scope == "slot" else None
    evidence = "h2_ppm − lowest other slot=180.0 (0.41)" if rule.fusion else ""
    return render_annotations(AlertTexts(language), rule, level, value, lv.threshold, (SITE, CABINET, sid), BATTERY,
                              evidence=evidence)


def _alert(rule, level: int, notes: dict[str, str], status: str = "firing") -> WebhookAlert:
    sid = SLOT if rule.scope == "slot" else None
    labels = alert_labels(rule.id, level, SITE, CABINET, sid, BATTERY)
    ends = "2026-12-06T14:31:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return WebhookAlert(status, labels, notes, "fp", STARTS, ends, "http://grafana.example/d/cascade")


def _every_level():
    return [(rule, lv.level) for rule in CATALOGUE.values() for lv in rule.levels]


# ---------------------------------------------------------------- the catalogue itself

def test_catalogue_files_are_up_to_date_and_every_text_is_in_chinese(capsys):
    """Like a generated file: python -m alerting.catalogue_i18n --write after changing a text."""
    assert catalogue_i18n.main(["--check"]) == 0, capsys.readouterr().err


def test_every_rule_text_is_in_the_catalogue():
    ids = {(m.context, m.id) for m in _catalog("zh_CN") if m.id}
    for rule in CATALOGUE.values():
        for text in (rule.name, rule.description, rule.diagnosis, rule.action):
            assert (None, text) in ids, (rule.id, text)
        if rule.unit:
            assert ("unit", rule.unit) in ids, rule.id


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_the_placeholders_of_their_english_text(language):
    for message in _catalog(language):
        if not message.id or not message.string:
            continue
        source, translated = _fields(message.id), _fields(message.string)
        assert set(translated) <= set(source), (message.id, message.string)
        if message.context != "time":  # a date is written differently (12月6日, 12-06); a value is not
            assert all(translated[name] == source[name] for name in translated), (message.id, message.string)
        if "value" in source:  # a page carries the value
            assert "value" in translated, message.id


def test_chinese_rule_names_are_short_and_free_of_codes():
    zh = AlertTexts("zh_CN")
    for rule in CATALOGUE.values():
        name = zh.rule_text(rule.name)
        assert CJK.search(name) and len(name) <= 12 and not CODES.search(name), (rule.id, name)
        for text in (rule.name, rule.diagnosis, rule.action):  # codes stay out of what pages carry
            assert not CODES.search(zh.rule_text(text)), (rule.id, zh.rule_text(text))


def test_language_names():
    assert [normalize_language(v) for v in ("zh_CN", "zh", "zh-CN", "ZH_cn", "en", "en_US", "en-GB")] == [
        "zh_CN", "zh_CN", "zh_CN", "zh_CN", "en", "en", "en"]
    with pytest.raises(ValueError, match="use one of zh_CN, en"):
        normalize_language("fr")


# ---------------------------------------------------------------- alert texts (engine)

@pytest.mark.parametrize("rule,level", _every_level(), ids=lambda v: getattr(v, "id", v))
def test_every_rule_renders_at_every_level_in_both_languages(rule, level):
    zh, en = _annotations(rule, level, "zh_CN"), _annotations(rule, level, "en")
    for notes in (zh, en):
        assert set(notes) == {"summary", "diagnosis", "action"}
        assert notes["summary"].startswith(f"L{level} ")
        assert all("{" not in text and text.strip() for text in notes.values()), notes
        assert f"{SITE}/{CABINET}" in notes["summary"]
    assert all(CJK.search(text) for text in zh.values()), zh
    assert not any(CJK.search(text) for text in en.values()), en
    if rule.unit:
        value = AlertTexts("en").reading(rule.levels[0].threshold, "", "")  # no unit: nothing
        assert value == ""
        assert AlertTexts("zh_CN").unit(rule.unit) in zh["summary"] and rule.unit in en["summary"]


def test_summary_leads_with_level_then_what_with_value_then_where():
    rule = CATALOGUE["over_temperature"]
    assert _annotations(rule, 3, "zh_CN", 85.23)["summary"] == "L3 电池温度过高 85.2 °C（site-01/C0003 5号仓）"
    assert _annotations(rule, 3, "en", 85.23)["summary"] == "L3 Battery over-temperature 85.2 °C at site-01/C0003 slot 5"
    cabinet = _annotations(CATALOGUE["cabinet_smoke"], 3, "zh_CN")
    assert cabinet["summary"] == "L3 检测到烟雾（site-01/C0003）"


def test_a_rule_written_per_level_says_what_to_do_at_this_level():
    rule = CATALOGUE["over_temperature"]
    assert _annotations(rule, 2, "zh_CN")["action"] == "停止 5 号仓充电，检查柜体散热。"
    assert _annotations(rule, 3, "zh_CN")["action"] == "切断该仓输出，人员远离，检查电池 NM48-TEST0001。"
    assert _annotations(rule, 3, "en")["action"] == "Cut off the slot, keep staff clear, inspect battery NM48-TEST0001."
    assert for_level("Level 2: stop. Level 3: cut off.", 1) == "Level 2: stop. Level 3: cut off."  # no part: all
    assert for_level("Check the charger.", 3) == "Check the charger."


def test_thermal_runaway_evidence_is_named_in_chinese():
    diagnosis = _annotations(CATALOGUE["thermal_runaway"], 3, "zh_CN", 1.05)["diagnosis"]
    assert diagnosis == "热失控前兆评分 1.05（3级）；依据：氢气（高于其他仓）=180.0 (0.41)。"


class _BadCatalog:
    """A translator that got the placeholders wrong."""

    def __init__(self, text: str) -> None:
        self.text = text

    def gettext(self, msgid: str) -> str:
        return self.text

    def pgettext(self, context: str, msgid: str) -> str:
        return self.text


@pytest.mark.parametrize("bad", ["{valeur:.1f} °C", "{value:.1f", "{value:d}", "{value[0]}", "{value.real.x}", "{}"])
def test_a_bad_translation_never_raises_and_falls_back_to_english(bad):
    texts = AlertTexts("zh_CN")
    texts._catalog = _BadCatalog(bad)  # type: ignore[assignment]
    notes = render_annotations(texts, CATALOGUE["over_temperature"], 3, 85.2, 70.0, (SITE, CABINET, SLOT), BATTERY)
    english = render_annotations(AlertTexts("en"), CATALOGUE["over_temperature"], 3, 85.2, 70.0,
                                 (SITE, CABINET, SLOT), BATTERY)
    assert notes["diagnosis"] == english["diagnosis"]
    assert notes["action"] == english["action"]


def test_a_bad_english_text_is_shown_raw():
    rules = parse_rules("""
rules:
  - id: odd
    description: d
    source: x
    diagnosis: "value {value:d} threshold {threshold:.1f}"
    action: "a"
    scope: cabinet
    unit: ppm
    input: {field: co_ppm}
    levels: {1: 5}
""")
    notes = render_annotations(AlertTexts("zh_CN"), rules["odd"], 1, 7.5, "-", (SITE, CABINET, None), None)
    assert notes["diagnosis"] == "value {value:d} threshold {threshold:.1f}"
    assert notes["summary"] == "L1 d 7.5 ppm（site-01/C0003）"  # the value with the spec that fits


# ---------------------------------------------------------------- channel texts (notifier)

def test_level_3_thermal_page_in_chinese_and_english():
    rule = CATALOGUE["over_temperature"]
    zh = compose(_alert(rule, 3, _annotations(rule, 3, "zh_CN", 85.23)), "zh_CN", SHANGHAI)
    # The battery once: the action names it, so the headline does not.
    assert zh["sms"] == ("三级预警：site-01/C0003 5号仓 电池温度过高 85.2 °C。"
                         "切断该仓输出，人员远离，检查电池 NM48-TEST0001。（12月6日 22:04）")
    assert zh["voice"] == "电池安全三级预警。site-01，C0003号柜，5号仓，电池温度过高，85.2摄氏度。请立即处置，详情见短信。"
    assert zh["title"] == "三级预警：site-01/C0003 5号仓"
    assert zh["subject"] == "【Cascade】三级预警：site-01/C0003 5号仓 电池温度过高 85.2 °C"
    assert "开始时间：2026年12月6日 22:04:53（UTC+08:00）" in zh["email"]
    assert (zh["level"], zh["status"], zh["time"], zh["language"]) == ("三级预警", "告警中", "12月6日 22:04", "zh_CN")

    en = compose(_alert(rule, 3, _annotations(rule, 3, "en", 85.23)), "en", SHANGHAI)
    assert en["sms"] == ("Level 3 critical at site-01/C0003 slot 5: Battery over-temperature 85.2 °C. "
                         "Cut off the slot, keep staff clear, inspect battery NM48-TEST0001. (12-06 22:04)")
    assert en["voice"] == ("Battery safety alert, Level 3 critical. site-01, cabinet C0003, slot 5. "
                           "Battery over-temperature, 85.2 degrees Celsius. Act now. Details follow by SMS.")
    assert en["subject"] == "[Cascade] Level 3 critical: Battery over-temperature 85.2 °C at site-01/C0003 slot 5"
    assert "Started: 2026-12-06 22:04:53 (UTC+08:00)" in en["email"]


@pytest.mark.parametrize("rule,level", _every_level(), ids=lambda v: getattr(v, "id", v))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_carries_level_place_what_and_action(rule, level, language):
    notes = _annotations(rule, level, language)
    page = compose(_alert(rule, level, notes), language, SHANGHAI)
    level_word = Texts(language).ptr("level", f"Level {level} " + {1: "notice", 2: "warning", 3: "critical"}[level])
    sms = page["sms"]
    assert sms.startswith(level_word) and SITE in sms and CABINET in sms and BATTERY in sms
    assert page["headline"] in sms and notes["action"] in sms and "12" in sms
    assert not re.search(r"\d{4}-\d\d-\d\dT|\.\d{7,}|\b1765\d{6}\b", sms + page["text"] + page["email"])  # human times
    if language == "zh_CN":
        assert len(sms) <= TWO_SEGMENTS, (len(sms), sms)
    voice = page["voice"]
    assert voice.count(CABINET) == 1 and voice.count(SITE) == 1 and level_word in voice
    assert rule.id not in voice and BATTERY not in voice and not CODES.search(voice)
    assert not re.search(r"°|kΩ|kPa|\bL[123]\b", voice), voice
    if rule.scope == "slot":
        assert str(SLOT) in voice and (SLOT and str(SLOT) in sms)
    for name in MESSAGE_FIELDS:
        assert isinstance(page[name], str) and "{" not in page[name], (name, page[name])


def test_voice_says_numbers_with_their_units_in_words():
    t = Texts("zh_CN")
    cases = {"温升过快 2.4 °C/min": "温升过快，每分钟2.4摄氏度", "低温充电 -10.5 °C": "低温充电，零下10.5摄氏度",
             "电量过低 3 %": "电量过低，百分之3", "绝缘电阻过低 4.2 kΩ": "绝缘电阻过低，4.2千欧",
             "仓内氢气升高 120 ppm（高于柜内基线）": "仓内氢气升高，120ppm（高于柜内基线）"}
    labels = {"level": "3", "rule": "x", "site": SITE, "cabinet": CABINET, "slot": "5"}
    for head, spoken in cases.items():
        voice = compose(WebhookAlert("firing", labels, {"summary": f"L3 {head}（site-01/C0003 5号仓）"}, "", "", "", ""),
                        t.language, SHANGHAI)["voice"]
        assert spoken in voice, voice


def test_headline_drops_level_and_place_in_either_language():
    labels = {"level": "3", "site": SITE, "cabinet": CABINET, "slot": "5"}
    assert headline("L3 电池温度过高 85.2 °C（site-01/C0003 5号仓）", labels) == "电池温度过高 85.2 °C"
    assert headline("L3 Battery over-temperature 85.2 °C at site-01/C0003 slot 5", labels) == \
        "Battery over-temperature 85.2 °C"
    assert headline("L3 protective action slot_cutoff FAILED at site-01/C0003 slot 5", labels) == \
        "protective action slot_cutoff FAILED"
    assert headline("Cascade collector 10.0.0.1:9108 is down", {"component": "collector"}) == \
        "Cascade collector 10.0.0.1:9108 is down"


def test_times_are_human_in_the_configured_zone():
    zh, en = Texts("zh_CN"), Texts("en")
    assert format_time(STARTS, zh, SHANGHAI) == "12月6日 22:04"
    assert format_time(STARTS, en, dt.UTC, long=True) == "2026-12-06 14:04:53 (UTC+00:00)"
    assert format_time("2026-12-06T22:04:53+08:00", zh, SHANGHAI, long=True) == "2026年12月6日 22:04:53（UTC+08:00）"
    assert format_time("0001-01-01T00:00:00Z", zh, SHANGHAI) == ""  # Alertmanager's "no end yet"
    assert format_time("", zh, SHANGHAI) == ""
    assert format_time("yesterday", zh, SHANGHAI) == "yesterday"  # never raises


def test_resolved_page_says_so_with_the_resolution_time():
    rule = CATALOGUE["over_temperature"]
    page = compose(_alert(rule, 3, _annotations(rule, 3, "zh_CN", 60.0), status="resolved"), "zh_CN", SHANGHAI)
    assert page["sms"].startswith("三级预警已恢复：site-01/C0003 5号仓 电池温度过高 60.0 °C")
    assert page["sms"].endswith("（12月6日 22:31）") and page["status"] == "已恢复"
    assert "恢复时间：2026年12月6日 22:31:00（UTC+08:00）" in page["email"]


def test_message_placeholders_are_checked_when_the_config_loads():
    assert compile_template("{{message.sms}}").render({"message": {"sms": "x"}}) == "x"
    with pytest.raises(TemplateError, match="unknown placeholder {{message.sns}}"):
        compile_template("{{message.sns}}")


# ---------------------------------------------------------------- configuration

def test_language_defaults_to_chinese_and_resolves_per_delivery_and_recipient():
    data = make_config("http://127.0.0.1:1")
    config = parse_config(data, env=ENV)
    assert config.language == "zh_CN" and config.timezone.utcoffset(None) == dt.timedelta(hours=8)
    data["notifier"].update(language="en", timezone="UTC")
    data["receivers"]["critical"][1] = {"channel": "sms", "provider": "sms", "language": "zh-CN",
                                        "to": ["+100", {"to": 8613800000001, "language": "en"}]}
    config = parse_config(data, env=ENV)
    sms = config.receivers["critical"][1]
    assert config.language == "en" and config.timezone == dt.UTC
    assert sms.recipients == ("+100", "8613800000001")
    assert [sms.language_for(r) for r in sms.recipients] == ["zh_CN", "en"]
    assert config.receivers["critical"][2].language_for("oncall") == "en"


@pytest.mark.parametrize("change,key,problem,fix", [
    (lambda d: d["notifier"].update(language="fr"), "notifier.language", "'fr' is not a supported language",
     "use zh_CN or en"),
    (lambda d: d["notifier"].update(timezone="Mars/Olympus"), "notifier.timezone", "unknown time zone 'Mars/Olympus'",
     "an IANA time zone name"),
    (lambda d: d["receivers"]["warning"][0].update(language="jp"), "receivers.warning[0].language",
     "'jp' is not a supported language", "use zh_CN or en"),
    (lambda d: d["receivers"]["warning"][0].update(to=[{"to": "+1", "lang": "en"}]), "receivers.warning[0].to[0]",
     "unknown key(s) ['lang']", "{to: ..., language: en}"),
    (lambda d: d["receivers"]["warning"][0].update(to=[{"language": "en"}]), "receivers.warning[0].to[0].to",
     "missing", "add to:"),
    (lambda d: d["receivers"]["warning"][0].update(to=[{"to": "+1", "language": "de"}]),
     "receivers.warning[0].to[0].language", "'de' is not a supported language", "use zh_CN or en"),
])
def test_bad_language_settings_name_key_and_fix(change, key, problem, fix):
    data = make_config("http://127.0.0.1:1")
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="notifier.yaml", env=ENV)
    assert str(err.value).startswith(f"notifier.yaml: {key}: {problem}") and fix in str(err.value), str(err.value)


async def test_each_recipient_gets_the_page_in_its_own_language(provider, start_notifier):  # noqa: F811
    data = make_config(provider.url)
    data["providers"]["sms"]["body"]["text"] = "{{message.sms}}"
    data["providers"]["voice"]["body"] = "{{message.voice}}"
    data["receivers"]["critical"] = [
        {"channel": "sms", "provider": "sms", "to": ["+100", {"to": "+200", "language": "en"}]},
        {"channel": "voice", "provider": "voice", "to": ["+100"], "language": "en"}]
    notifier = await start_notifier(data)
    rule = CATALOGUE["over_temperature"]
    notes = _annotations(rule, 3, "zh_CN", 85.23)
    labels = alert_labels(rule.id, 3, SITE, CABINET, SLOT, BATTERY)
    body = {"status": "firing", "labels": labels, "annotations": notes, "startsAt": STARTS,
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f1", "generatorURL": ""}
    status, _ = await notifier.post("critical", payload(body))
    assert status == 200
    await notifier.drain()
    texts = {r.form()["to"]: r.form()["text"] for r in provider.on("/sms")}
    assert texts["+100"].startswith("三级预警：site-01/C0003 5号仓 电池温度过高 85.2 °C。")
    # English framing; the alert's own words come in the collector's language (alerting language).
    assert texts["+200"].startswith("Level 3 critical at site-01/C0003 slot 5: 电池温度过高 85.2 °C. 切断该仓输出")
    (voice,) = provider.on("/voice/%2B100")
    assert voice.body.decode().startswith("Battery safety alert, Level 3 critical. site-01, cabinet C0003, slot 5.")


def test_the_battery_is_named_once_in_each_message() -> None:
    """After the headline only when what follows in the same message does not name it (as a whole id)."""
    labels = {"alertname": "bms_temperature", "level": "2", "site": "site-01", "cabinet": "C0003", "slot": "5",
              "battery": "LF60-1"}
    notes = {"summary": "L2 BMS 温度保护（site-01/C0003 5号仓）", "diagnosis": "电池 LF60-1 的 BMS 触发温度保护。",
             "action": "停止 5 号仓充电，检查电池 LF60-12 旁的柜体散热。"}
    page = compose(WebhookAlert("firing", labels, notes, "", "2026-12-06T14:04:53Z", "0001-01-01T00:00:00Z", ""),
                   "zh_CN", SHANGHAI)
    # the SMS has no diagnosis and its action names another pack (LF60-12): the id follows the headline
    assert page["sms"].startswith("二级预警：site-01/C0003 5号仓 BMS 温度保护，电池 LF60-1。停止"), page["sms"]
    # the app text shows the diagnosis, which names it: not again after the headline
    assert page["text"].splitlines()[0] == "BMS 温度保护" and page["text"].count("LF60-1 ") == 1, page["text"]
