"""Ready-made texts for each channel, in the recipient's language: ``{{message.sms}}``, ``{{message.voice}}`` …

Pages are read (or heard) in a hurry, so each text leads with the level and the place, then says
what is wrong with its value and unit, then what to do:

* ``sms``: one line, level in words, place, what and value, battery, action, time (``12月6日 22:04``);
* ``voice``: short sentences written to be heard: the level in words, site, cabinet and slot said
  once, the value with its unit in words (``85.2摄氏度``), no rule ids, clause codes or battery
  serials, and where to read the rest (the SMS);
* ``title`` / ``text``: an app notification's title and body;
* ``subject`` / ``email``: an e-mail with every detail on its own line, times with their zone;
* the pieces: ``level`` (``三级预警``), ``status``, ``place``, ``headline`` (the summary without its
  level and place), ``time``, ``language``.

What is wrong, and what to do, come from the alert's annotations (``summary``, ``diagnosis``,
``action``), written by the warning engine in its own language (alerting/i18n.py); the rest is
the notifier's, in the language of the delivery or recipient. Composing never raises: a missing
label or an unreadable time gives a shorter text, not a lost page.

    >>> from notifier.webhook import WebhookAlert
    >>> alert = WebhookAlert("firing", {"alertname": "over_temperature", "rule": "over_temperature",
    ...     "level": "3", "site": "site-01", "cabinet": "C0003", "slot": "5"},
    ...     {"summary": "L3 电池温度过高 85.2 °C（site-01/C0003 5号仓）"}, "", "", "", "")
    >>> compose(alert, "zh_CN", dt.UTC)["voice"]
    '电池安全三级预警。site-01，C0003号柜，5号仓，电池温度过高，85.2摄氏度。请立即处置，详情见短信。'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from .i18n import LANGUAGES, Texts, texts
from .webhook import WebhookAlert

__all__ = ["MESSAGE_FIELDS", "compose", "format_time", "headline"]

#: The names usable as ``{{message.<name>}}`` in provider templates.
MESSAGE_FIELDS = ("sms", "voice", "title", "text", "subject", "email", "level", "status", "place", "headline",
                  "time", "language")

_LEVEL_PREFIX = re.compile(r"^L[1-3]\s+")
# Clause and standard references (P-5.2.1a, D-B.4, V-5.10, GB/T 32960) mean nothing read aloud.
_CODES = re.compile(r"\s*[（(]?(?<![A-Za-z0-9])(?:[PDV]-[0-9A-Z][0-9A-Za-z.]*|GB/T\s*[\d.]+)[)）]?")
# A number followed by a unit symbol; longest units first.
_UNITS = ("°C/min", "ppm/min", "°C", "kPa", "kΩ", "ppm", "V", "A", "%")
_NUMBER_UNIT = re.compile(r"(-?\d+(?:\.\d+)?)\s*(" + "|".join(re.escape(u) for u in _UNITS) + r")(?![A-Za-z])")
_CJK_THEN_WORD = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[-\d\u4e00-\u9fff])")
_WORD_THEN_NUMBER = re.compile(r"(?<=[A-Za-z])\s+(?=-?\d)")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_NEVER = "0001-01-01"  # Alertmanager's zero time: a firing alert's endsAt


def compose(alert: WebhookAlert, language: str, tz: dt.tzinfo) -> dict[str, str]:
    """Every ``{{message.<name>}}`` text for ``alert`` in ``language`` (normalized), times in ``tz``."""
    t = texts(language)
    labels, notes = alert.labels, alert.annotations
    resolved = alert.status == "resolved"
    level = _level(t, labels.get("level", ""))
    place = _place(t, labels)
    head = headline(notes.get("summary", ""), labels) or labels.get("alertname", "")
    battery = labels.get("battery", "")
    action = notes.get("action", "").strip()
    # The battery by its id once: after the headline, unless the action (said in the same message) names it.
    with_battery = (t.ptr("message", ", battery {battery}", battery=battery)
                    if battery and (resolved or not _names(action, battery)) else "")
    if battery and labels.get("vehicle") and labels.get("slot"):
        # A vehicle's pack named by its id: the place is the vehicle ("bj/V1号车 电池温度过高 72 °C，电池
        # LFP48-…", not "bj/V1号车 电池 电池温度过高 72 °C，电池 LFP48-…").
        place = t.tr("{fleet}/{vehicle} vehicle", fleet=labels.get("site", ""), vehicle=labels["vehicle"])
    diagnosis = notes.get("diagnosis", "").strip()
    when = alert.ends_at if resolved else alert.starts_at
    time = format_time(when, t, tz)
    values = {"level": level, "place": place, "headline": head, "battery": with_battery, "action": action,
              "time": time}

    if resolved:
        sms = t.ptr("sms", "{level} resolved at {place}: {headline}{battery}. ({time})", **values)
        title = t.ptr("app", "{level} resolved: {place}", **values)
        subject = t.ptr("email", "[Cascade] {level} resolved: {headline} at {place}", **values)
    else:
        sms = t.ptr("sms", "{level} at {place}: {headline}{battery}. {action} ({time})", **values)
        title = t.ptr("app", "{level}: {place}", **values)
        subject = t.ptr("email", "[Cascade] {level}: {headline} at {place}", **values)
    # The app text also shows the diagnosis: the battery once there too.
    text_battery = "" if with_battery and _names(diagnosis, battery) else with_battery
    text_lines = [head + text_battery, diagnosis,
                  t.ptr("app", "Action: {action}", action=action) if action and not resolved else "",
                  t.ptr("app", "Time: {time}", time=time) if time else ""]
    return {
        "sms": _tidy(sms),
        "voice": _voice(t, alert, level, head),
        "title": title,
        "text": "\n".join(line for line in text_lines if line),
        "subject": _tidy(subject),
        "email": _email(t, alert, title, head, diagnosis, action, tz, place),
        "level": level,
        "status": t.ptr("status", "resolved") if resolved else t.ptr("status", "firing"),
        "place": place,
        "headline": head,
        "time": time,
        "language": t.language,
    }


def _names(text: str, battery: str) -> bool:
    """Whether ``text`` names ``battery`` as a whole id (``NM48-1`` is not named by ``NM48-12``)."""
    return re.search(rf"(?<![\w-]){re.escape(battery)}(?![\w-])", text) is not None


def headline(summary: str, labels: Mapping[str, str]) -> str:
    """What is wrong, from the summary: without its ``L3`` prefix and the place (said by the page
    itself), in whichever language the engine wrote it. Anything else is kept as it is."""
    text = summary.strip()
    for language in LANGUAGES:
        t = texts(language)
        # The engine's summary is "L{level} {name}{reading} at {where}"; find its frame around the name.
        frame = t.tr("L{level} {name}{reading} at {where}", level=labels.get("level", ""), name="\x00",
                     reading="", where=_engine_place(t, labels))
        before, _, after = frame.partition("\x00")
        if after.strip() and text.endswith(after):
            text = text[: -len(after)]
            break
    return _LEVEL_PREFIX.sub("", text).strip()


def format_time(value: str, t: Texts, tz: dt.tzinfo, *, long: bool = False) -> str:
    """An Alertmanager time (RFC 3339, nanoseconds) as people write it, in ``tz``: ``12月6日 22:04``;
    ``long`` adds the year, seconds and the UTC offset. Empty for no time; the raw text if unreadable."""
    if not value or value.startswith(_NEVER):
        return ""
    try:
        when = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        when = when.astimezone(tz)
    except (ValueError, OverflowError):
        return value
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    zone = f"UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    parts = {"year": when.year, "month": when.month, "day": when.day, "hour": when.hour, "minute": when.minute,
             "second": when.second, "zone": zone}
    if long:
        return t.ptr("time", "{year}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d} ({zone})", **parts)
    return t.ptr("time", "{month:02d}-{day:02d} {hour:02d}:{minute:02d}", **parts)


# ---------------------------------------------------------------- pieces

def _level(t: Texts, level: str) -> str:
    if level == "1":
        return t.ptr("level", "Level 1 notice")
    if level == "2":
        return t.ptr("level", "Level 2 warning")
    if level == "3":
        return t.ptr("level", "Level 3 critical")
    return t.ptr("level", "Alert")


def _engine_place(t: Texts, labels: Mapping[str, str]) -> str:
    """The place as the engine writes it in a summary (alerting/engine.py ``_place``)."""
    site, cabinet, slot = labels.get("site", ""), labels.get("cabinet", ""), labels.get("slot", "")
    if labels.get("vehicle"):  # a battery rule on its pack (slot 1), or a vehicle rule on the vehicle itself
        if not slot:
            return t.tr("{fleet}/{vehicle} vehicle", fleet=site, vehicle=labels["vehicle"])
        return t.tr("{fleet}/{vehicle} battery", fleet=site, vehicle=labels["vehicle"])
    if slot:
        return t.tr("{site}/{cabinet} slot {slot}", site=site, cabinet=cabinet, slot=slot)
    return "/".join(v for v in (site, cabinet) if v)


def _place(t: Texts, labels: Mapping[str, str]) -> str:
    """Where, in words: ``site-01/C0003 5号仓``; a health alert says its component and instance."""
    place = _engine_place(t, labels)
    if place:
        return place
    return " ".join(v for v in (labels.get("component", ""), labels.get("instance", "")) if v)


def _voice_place(t: Texts, labels: Mapping[str, str]) -> str:
    site, cabinet, slot = labels.get("site", ""), labels.get("cabinet", ""), labels.get("slot", "")
    if labels.get("vehicle"):
        if not slot:
            return t.ptr("voice", "{fleet}, vehicle {vehicle}", fleet=site, vehicle=labels["vehicle"])
        return t.ptr("voice", "{fleet}, vehicle {vehicle}, its battery", fleet=site, vehicle=labels["vehicle"])
    if cabinet and slot:
        return t.ptr("voice", "{site}, cabinet {cabinet}, slot {slot}", site=site, cabinet=cabinet, slot=slot)
    if cabinet:
        return t.ptr("voice", "{site}, cabinet {cabinet}", site=site, cabinet=cabinet)
    return _place(t, labels)


def _voice(t: Texts, alert: WebhookAlert, level: str, head: str) -> str:
    """Written to be heard: short sentences, everything said once, units in words, no codes."""
    labels = alert.labels
    what = _speakable(t, head)
    place = _voice_place(t, labels)
    if alert.status == "resolved":
        return _tidy(t.ptr("voice", "{level}, resolved. {place}. {what}.", level=level, place=place, what=what))
    if labels.get("rule"):
        opening = t.ptr("voice", "Battery safety alert, {level}.", level=level)
    else:
        opening = t.ptr("voice", "Cascade system alert, {level}.", level=level)
    if labels.get("level") == "3":
        instruction = t.ptr("voice", "Act now. Details follow by SMS.")
    elif labels.get("level") == "2":
        instruction = t.ptr("voice", "Please act soon. Details follow by SMS.")
    else:
        instruction = t.ptr("voice", "Details are in the app.")
    return _tidy(t.ptr("voice", "{opening} {place}. {what}. {instruction}", opening=opening, place=place,
                       what=what, instruction=instruction))


def _speakable(t: Texts, text: str) -> str:
    """Units in words (``85.2摄氏度``, ``85.2 degrees Celsius``), codes dropped, a pause before a number."""
    text = _CODES.sub("", text)
    text = _NUMBER_UNIT.sub(lambda m: _spoken(t, m.group(2), m.group(1)), text)
    # A pause before the number: "电池温度过高，85.2摄氏度", "Battery over-temperature, 85.2 degrees Celsius".
    text = _WORD_THEN_NUMBER.sub(", ", text) if t.language == "en" else _CJK_THEN_WORD.sub("，", text)
    return text.strip()


def _spoken(t: Texts, unit: str, number: str) -> str:
    if unit == "°C" and number.startswith("-"):
        number = t.ptr("spoken unit", "minus {number}", number=number[1:])  # 零下10.5摄氏度
    words = {
        "°C/min": t.ptr("spoken unit", "{number} °C/min", number=number),
        "ppm/min": t.ptr("spoken unit", "{number} ppm/min", number=number),
        "°C": t.ptr("spoken unit", "{number} °C", number=number),
        "kPa": t.ptr("spoken unit", "{number} kPa", number=number),
        "kΩ": t.ptr("spoken unit", "{number} kΩ", number=number),
        "ppm": t.ptr("spoken unit", "{number} ppm", number=number),
        "V": t.ptr("spoken unit", "{number} V", number=number),
        "A": t.ptr("spoken unit", "{number} A", number=number),
        "%": t.ptr("spoken unit", "{number} %", number=number),
    }
    return words.get(unit, f"{number} {unit}")


def _email(t: Texts, alert: WebhookAlert, title: str, head: str, diagnosis: str, action: str,
           tz: dt.tzinfo, place: str) -> str:
    labels = alert.labels
    rows = [
        (t.ptr("email", "Where"), place),
        (t.ptr("email", "Battery"), labels.get("battery", "")),
        (t.ptr("email", "Diagnosis"), diagnosis),
        (t.ptr("email", "Action"), action),
        (t.ptr("email", "Started"), format_time(alert.starts_at, t, tz, long=True)),
        (t.ptr("email", "Resolved"), format_time(alert.ends_at, t, tz, long=True) if alert.status == "resolved"
         else ""),
        (t.ptr("email", "Rule"), labels.get("rule", "") or labels.get("alertname", "")),
        (t.ptr("email", "Details"), alert.generator_url),
    ]
    lines = [f"{title}", head, ""]
    lines += [t.ptr("email", "{name}: {value}", name=name, value=value) for name, value in rows if value]
    return "\n".join(lines) + "\n"


def _tidy(text: str) -> str:
    """No doubled spaces or stray punctuation where an empty piece was left out."""
    text = re.sub(r" {2,}", " ", text)
    return re.sub(r" ([.,。，])", r"\1", text).strip()
