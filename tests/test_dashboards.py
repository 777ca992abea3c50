"""Grafana dashboards (dashboards/, docs/dashboards.md).

There is no Grafana here, so the dashboards are checked the way Grafana would use them:
(a) the committed JSON is exactly what the generator produces (Simplified Chinese; the English build
differs only in its texts), and value thresholds follow the warning catalogue they are derived from
(a changed copy moves them; a missing rule or level is an error at generation time); (b) every
dashboard decodes through the grafana-foundation-sdk models of Grafana 11 without losing a key or
carrying a value of the wrong type (the one part those models leave untyped, InfluxDB queries and
annotation targets, is checked against the InfluxDB plugin's query model); every panel, target,
annotation and variable refers to a provisioned datasource uid, panel ids are unique, uids fixed,
one unit per axis, drill-down links keep the time range; (c) every query (panels, annotations,
template variables) runs against a live stack — simulator, Pipeline with the warning engine and
alert service, vehicle reports, real InfluxDB, Prometheus scraping /metrics (collector and vehicle
ingest) with the shipped recording rules, real Alertmanager — after Grafana's macros and variables
are substituted, and must succeed and return data.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from alerting.engine import Engine
from alerting.rules import DEFAULT_CATALOGUE, load_rules
from alerting.state import AlertStore
from cascade.app import alert_service_for
from cascade.commands import CommandMetrics
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from collectors.modbus.profile import find_profile
from collectors.vehicles.ingest import IngestMetrics
from core.errors import CascadeError
from core.events import AlertEvent, CommandResult
from core.model import SlotReading, VehicleReading
from dashboards import build_all, render
from exporters.influx.lineprotocol import encode_line
from exporters.influx.schema import command_to_line, encode_points
from exporters.influx.sink import InfluxConfig
from simulators.fleet import build_fleet
from simulators.scenarios import parse_scenario
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block
from tests.fixtures.prom import SHIPPED_PROMETHEUS_DIR
from tests.test_health_dashboard import BATTERY as HEALTH_BATTERY
from tests.test_health_dashboard import health_lines

REPO = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO / "dashboards"
EXPECTED_UIDS = {"cascade-fleet", "cascade-cabinet", "cascade-battery", "cascade-vehicles", "cascade-pipeline",
                 "cascade-regulator", "cascade-alarm-stats", "cascade-battery-health", "cascade-oncall",
                 "cascade-vehicle", "cascade-second-life"}
CJK = re.compile(r"[\u4e00-\u9fff]")

# Panels whose queries are valid but legitimately return nothing in this test: (dashboard, English panel
# title, refId).
EMPTY_ALLOWED = {
    # The notifier (`cascade notify`, Prometheus job cascade-notifier) is a separate process that only
    # counts once Alertmanager has delivered a webhook to it; it does not run in this test.
    ("cascade-pipeline", "Notifier deliveries by channel and result", "A"),
    ("cascade-pipeline", "Notifier deliveries by channel and result", "B"),
    ("cascade-pipeline", "Notifier delivery time", "A"),
    ("cascade-pipeline", "Notifier delivery time", "B"),
    ("cascade-pipeline", "Notifier delivery time", "C"),
}



def _provisioned_uids() -> set[str]:
    text = (REPO / "provisioning" / "grafana" / "datasources" / "datasources.yml").read_text()
    return {d["uid"] for d in yaml.safe_load(text)["datasources"]}


# -- (a) committed JSON == generated ---------------------------------------------------------------

def test_committed_json_equals_generator() -> None:
    models = build_all()
    assert set(models) == EXPECTED_UIDS
    committed = {p.stem for p in DASHBOARD_DIR.glob("*.json")}
    assert committed == EXPECTED_UIDS, "stale or missing dashboard JSON: run `python -m dashboards`"
    for uid, model in models.items():
        text = (DASHBOARD_DIR / f"{uid}.json").read_text(encoding="utf-8")
        assert text == render(model), f"dashboards/{uid}.json differs from the generator: run `python -m dashboards`"


def _texts(model: dict[str, Any]) -> list[str]:
    """What a person reads: dashboard, panel, axis, legend, column, value, variable and annotation texts."""
    found = [model["title"], model["description"]] + [link["title"] for link in model["links"]]
    found += [v["label"] for v in model["templating"]["list"]] + [a["name"] for a in model["annotations"]["list"]]
    for panel in model["panels"]:
        found += [panel["title"], panel["description"]]
        found += [t.get("legendFormat", "") or t.get("alias", "") for t in panel["targets"]]
        config = panel["fieldConfig"]
        found.append(config["defaults"].get("custom", {}).get("axisLabel", ""))
        for mapping in config["defaults"].get("mappings", []):
            found += [option["text"] for option in mapping["options"].values()]
        for item in config["overrides"]:
            for prop in item["properties"]:
                if prop["id"] in ("displayName", "custom.axisLabel"):
                    found.append(prop["value"])
                elif prop["id"] == "mappings":
                    found += [option["text"] for mapping in prop["value"] for option in mapping["options"].values()]
                elif prop["id"] == "links":
                    found += [link["title"] for link in prop["value"]]
    return [text for text in found if text]


def test_chinese_by_default_english_by_option() -> None:
    """The shipped set speaks Chinese (every title, description and most labels); the English build says
    the same in English and nothing else; both run the same queries with the same layout."""
    chinese, english = build_all(), build_all(lang="en")
    for uid, model in chinese.items():
        assert CJK.search(model["title"]) and CJK.search(model["description"]), uid
        for panel in model["panels"]:
            assert CJK.search(panel["title"]) or panel["title"] in ("SOC",), (uid, panel["title"])
            assert CJK.search(panel["description"]), (uid, panel["title"])
        for variable in model["templating"]["list"]:
            assert CJK.search(variable["label"]), (uid, variable["name"])
        assert sum(bool(CJK.search(text)) for text in _texts(model)) > 0.6 * len(_texts(model)), uid
        assert not [text for text in _texts(english[uid]) if CJK.search(text)], f"{uid}: Chinese in the English build"
        queries = [query[1:] for query in _queries(model)]  # without the title: (refId, datasource, text)
        assert queries == [query[1:] for query in _queries(english[uid])], f"{uid}: not the same queries"
        assert ([p["gridPos"] for p in model["panels"]] == [p["gridPos"] for p in english[uid]["panels"]]), uid
    with pytest.raises(ValueError, match="unsupported language"):
        build_all(lang="fr")


# Panels coloured by a catalogue rule: (dashboard, panel title) -> rule id.
THRESHOLD_PANELS = {
    ("cascade-fleet", "Hottest battery per cabinet"): "over_temperature",
    ("cascade-fleet", "Max H2 / off-gas per cabinet"): "h2_gas",
    ("cascade-fleet", "CO per cabinet"): "cabinet_co",
    ("cascade-cabinet", "Pack temperature"): "over_temperature",
    ("cascade-cabinet", "H2 / off-gas"): "h2_gas",
    ("cascade-battery", "Temperature"): "over_temperature",
}
LEVEL_COLOURS = {1: "yellow", 2: "orange", 3: "red"}


CatalogueEdit = Callable[[dict[str, dict[str, Any]]], object]


def _catalogue_copy(tmp_path: Path, edit: CatalogueEdit) -> Path:
    """The shipped catalogue with ``edit(rules_by_id)`` applied (in place), written to tmp_path."""
    doc = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    rules = {rule["id"]: rule for rule in doc["rules"]}
    edit(rules)
    doc["rules"] = list(rules.values())
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _value_steps(models: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(dashboard, panel title) -> threshold steps, for panels that are not plain green."""
    found = {}
    for uid, model in models.items():
        for panel in model["panels"]:
            steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
            if steps and panel["type"] in ("timeseries", "bargauge"):
                found[(uid, panel["title"])] = steps
    return found


def _expected_steps(levels: dict[int, float]) -> list[dict[str, Any]]:
    return [{"color": "green", "value": None}] + [{"color": LEVEL_COLOURS[n], "value": levels[n]} for n in (1, 2, 3)]


def test_thresholds_follow_the_catalogue(tmp_path: Path) -> None:
    def edit(rules: dict[str, dict[str, Any]]) -> None:
        rules["over_temperature"]["levels"][2]["value"] = 52
        rules["h2_gas"]["levels"][1] = 25
        rules["cabinet_co"]["levels"][3] = 250.5
    rules = load_rules(_catalogue_copy(tmp_path, edit))
    models = build_all(rules, lang="en")
    expected = {"over_temperature": {1: 50, 2: 52, 3: 70}, "h2_gas": {1: 25, 2: 100, 3: 400},
                "cabinet_co": {1: 30, 2: 100, 3: 250.5}}
    steps = _value_steps(models)
    assert set(steps) == set(THRESHOLD_PANELS), "a panel gained or lost value thresholds: update THRESHOLD_PANELS"
    for (uid, title), rule in THRESHOLD_PANELS.items():
        assert steps[(uid, title)] == _expected_steps(expected[rule]), f"{uid} {title!r} does not follow {rule}"
    fleet = {p["title"]: p["description"] for p in models["cascade-fleet"]["panels"]}
    assert "level 2 ≥ 52 °C" in fleet["Hottest battery per cabinet"]
    assert "25/100/400 ppm" in fleet["Max H2 / off-gas per cabinet"]
    assert "30/100/250.5 ppm" in fleet["CO per cabinet"]
    chinese = [p["description"] for p in build_all(rules)["cascade-fleet"]["panels"]]
    assert any("2级 ≥ 52 °C" in text for text in chinese)
    assert any("25/100/400 ppm" in text for text in chinese)


@pytest.mark.parametrize("edit, message", [
    (lambda rules: rules.pop("h2_gas"), r"catalogue\.yaml: rule 'h2_gas': no such rule.*'h2_ppm'"),
    (lambda rules: rules["cabinet_co"]["levels"].pop(3), r"rule 'cabinet_co': the rule has no level 3.*'co_ppm'"),
    (lambda rules: rules["over_temperature"].update(input={"field": "cell_temperature_max_c"}),
     r"rule 'over_temperature': the rule now measures cell_temperature_max_c, not hottest_temperature_c"),
    (lambda rules: rules["h2_gas"].update(unit="%"), r"rule 'h2_gas': the rule's unit is '%', not 'ppm over cabinet'"),
    (lambda rules: rules["cabinet_co"].update(compare="<", levels={1: 300, 2: 100, 3: 30}),
     r"rule 'cabinet_co': level 1, 2, 3 compares with '<'"),
], ids=["rule-gone", "level-gone", "other-field", "other-unit", "falling"])
def test_catalogue_without_a_panels_rule_fails_at_generation(tmp_path: Path, edit: CatalogueEdit,
                                                             message: str) -> None:
    rules = load_rules(_catalogue_copy(tmp_path, edit))
    with pytest.raises(CascadeError, match=message):
        build_all(rules)


# -- (b) structure ---------------------------------------------------------------------------------

def test_datasources_ids_and_uids() -> None:
    provisioned = _provisioned_uids()
    assert {"cascade-influx", "cascade-prometheus", "cascade-alertmanager"} <= provisioned
    for uid, model in build_all().items():
        assert model["uid"] == uid and re.fullmatch(r"[a-z0-9-]{1,40}", uid)
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        for panel in model["panels"]:
            where = f"{uid} panel {panel['id']} {panel['title']!r}"
            assert panel["datasource"]["uid"] in provisioned, where
            assert panel["targets"], f"{where}: no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{where}: duplicate refIds"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in provisioned, where
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, where
            assert panel["description"], f"{where}: say what question it answers"
        for item in model["annotations"]["list"] + model["templating"]["list"]:
            if "datasource" in item:
                assert item["datasource"]["uid"] in provisioned, f"{uid} {item['name']}"
    assert build_all()["cascade-regulator"]["editable"] is False


# -- Grafana's own model: nothing dropped, nothing of the wrong type ------------------------------------

# InfluxDB queries are the part of a dashboard the SDK leaves untyped (no InfluxDB model; its annotation
# target is the built-in one's). Keys of InfluxQuery in Grafana 11's InfluxDB plugin (types.ts), and the
# ones its annotation editor writes; an annotation runs only with fromAnnotations and a query.
INFLUX_QUERY_KEYS = {"refId", "hide", "datasource", "query", "rawQuery", "resultFormat", "alias", "policy",
                     "measurement", "tags", "groupBy", "select", "orderByTime", "limit", "slimit", "tz", "fill",
                     "adhocFilters", "queryType"}
INFLUX_ANNOTATION_KEYS = {"refId", "query", "rawQuery", "resultFormat", "fromAnnotations", "textEditor",
                          "textColumn", "tagsColumn", "titleColumn", "timeEndColumn"}


def _sdk() -> Any:
    try:
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.cog.plugins import register_default_plugins
        from grafana_foundation_sdk.models.dashboard import Dashboard
    except ImportError as err:  # pragma: no cover - the [test] extras pin it
        pytest.fail(f"{err}: install the test extras (pip install -c constraints.txt -e '.[test]')")
    register_default_plugins()  # panel options and Prometheus queries decode into their typed models
    return Dashboard, JSONEncoder


def _lost(ours: Any, theirs: Any, path: str) -> list[str]:
    """Where the model read back from Grafana's types lost or changed what we wrote (it may add defaults)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{path}: read back as {type(theirs).__name__}"]
        return [e for key, value in ours.items()
                for e in (_lost(value, theirs[key], f"{path}.{key}") if key in theirs else [f"{path}.{key}: dropped"])]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [f"{path}: list read back differently"]
        return [e for i, (a, b) in enumerate(zip(ours, theirs)) for e in _lost(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} read back as {theirs!r}"]


def _type_errors(value: Any, hint: Any, path: str) -> list[str]:
    """``value`` (a decoded SDK object or plain JSON) against the SDK's type hint, recursively."""
    if hint is Any or hint is object:
        # Panel options and custom field config: typed by the panel plugin's model where it has one.
        return _type_errors(value, type(value), path) if hasattr(type(value), "from_json") else []
    if hint is type(None):
        return [] if value is None else [f"{path}: {value!r} where null is required"]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        found = [_type_errors(value, arm, path) for arm in args if value is None or arm is not type(None)]
        if any(not errors for errors in found):
            return []
        deeper = [errors for errors in found if not any(e.startswith(f"{path}: ") for e in errors)]
        return min(deeper or found, key=len)  # the arm the value has the shape of
    if value is None:
        return [f"{path}: null where {hint} is required"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [e for i, item in enumerate(value) for e in _type_errors(item, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        return [e for key, item in value.items() for e in _type_errors(item, args[1], f"{path}.{key}")]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [member.value for member in hint]
        return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if hint in (int, float):
        number = isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
        return [] if number else [f"{path}: {value!r} is not a{'n integer' if hint is int else ' number'}"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        if isinstance(value, dict):  # some models keep nested parts as JSON (links, transformations)
            value = hint.from_json(value)
        if not isinstance(value, hint):
            return [f"{path}: {type(value).__name__} is not {hint.__name__}"]
        return [e for name, attribute in typing.get_type_hints(type(value)).items()
                for e in _type_errors(getattr(value, name), attribute, f"{path}.{name}")]
    if isinstance(hint, type):
        return [] if isinstance(value, hint) else [f"{path}: {type(value).__name__} is not {hint.__name__}"]
    return [f"{path}: no check for {hint}"]


def _grafana_problems(model: dict[str, Any]) -> list[str]:
    """Everything Grafana 11 would drop, misread or not run in ``model``."""
    dashboard_type, encoder = _sdk()
    problems = []
    checked = json.loads(json.dumps(model))
    for i, item in enumerate(checked["annotations"]["list"]):
        target = item.pop("target", None)  # the SDK types only the built-in annotation target: checked here
        where = f"annotations.list[{i}] {item.get('name')!r}"
        if item["datasource"]["type"] == "influxdb":
            if not target or not target.get("query") or target.get("fromAnnotations") is not True:
                problems.append(f"{where}: no target with a query and fromAnnotations: Grafana shows no events")
            problems += [f"{where}.target.{key}: not an InfluxDB annotation key"
                         for key in sorted(set(target or {}) - INFLUX_ANNOTATION_KEYS)]
    for panel in checked["panels"]:
        for target in panel["targets"]:
            if target["datasource"]["type"] == "influxdb":
                problems += [f"panel {panel['title']!r} {target['refId']}.{key}: not an InfluxQuery key"
                             for key in sorted(set(target) - INFLUX_QUERY_KEYS)]
    decoded = dashboard_type.from_json(checked)
    problems += _lost(checked, json.loads(json.dumps(decoded, cls=encoder)), "dashboard")
    problems += _type_errors(decoded, dashboard_type, "dashboard")
    return problems


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
def test_grafana_models_keep_every_key_and_type(lang: str) -> None:
    for uid, model in build_all(lang=lang).items():
        problems = _grafana_problems(model)
        assert not problems, f"{uid} ({lang}):\n" + "\n".join(problems)


def test_grafana_model_check_catches_what_grafana_ignores() -> None:
    """The check is not vacuous: the old annotation form, an unknown key, a misspelt option, a wrong type."""
    model = build_all()["cascade-cabinet"]
    old = model["annotations"]["list"][0]
    target = old.pop("target")
    old.update(query=target["query"], textColumn="summary", tagsColumn="rule,severity,kind")  # pre-Grafana-9 form
    panel = model["panels"][1]
    panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "dots"
    panel["options"]["legend"]["placment"] = "right"
    panel["gridPos"]["w"] = "12"
    panel["targets"][0]["aliasBy"] = "slot"
    problems = "\n".join(_grafana_problems(model))
    for expected in ("no target with a query", ".query: dropped", ".textColumn: dropped", "placment: dropped",
                     "draw_style: 'dots' is not one of", "grid_pos.w: '12' is not an integer",
                     "A.aliasBy: not an InfluxQuery key"):
        assert expected in problems, f"{expected!r} not reported:\n{problems}"


def _units_by_axis(panel: dict[str, Any]) -> list[tuple[str, str]]:
    """(placement, unit) of every axis a timeseries panel draws."""
    axes = {("auto", panel["fieldConfig"]["defaults"].get("unit", ""))}
    for item in panel["fieldConfig"]["overrides"]:
        props = {prop["id"]: prop["value"] for prop in item["properties"]}
        if "unit" in props:
            axes.add((props.get("custom.axisPlacement", "auto"), props["unit"]))
    return sorted(axes)


def test_units_axes_and_links() -> None:
    for uid, model in build_all(lang="en").items():
        for panel in model["panels"]:
            where = f"{uid} {panel['title']!r}"
            unit = panel["fieldConfig"]["defaults"].get("unit", "")
            texts = " ".join(t.get("expr", t.get("query", "")) for t in panel["targets"]) + panel["title"]
            if panel["type"] != "table":
                assert unit, f"{where}: say the unit (Grafana unit id)"
            if re.search(r"error|reject|fail", texts, re.IGNORECASE):
                assert unit not in ("reqps", "short"), f"{where}: errors are a share or a count per second"
            if panel["type"] == "timeseries":
                axes = _units_by_axis(panel)
                placements = [placement for placement, _ in axes]
                assert len(placements) == len(set(placements)), f"{where}: two units on one axis {axes}"
            for item in panel["fieldConfig"]["overrides"]:
                for prop in item["properties"]:
                    for link in prop["value"] if prop["id"] == "links" else []:
                        assert link["url"].startswith("/d/") and "${__url_time_range}" in link["url"], where
    cabinet = {p["title"]: p for p in build_all(lang="en")["cascade-cabinet"]["panels"]}
    assert _units_by_axis(cabinet["Cabinet temperature, CO, CO2"]) == [("auto", "celsius"), ("right", "ppm")]
    assert _units_by_axis(cabinet["Input current and power"]) == [("auto", "amp"), ("right", "kwatt")]
    assert _units_by_axis(cabinet["Input voltage"]) == [("auto", "volt")]


def test_the_cabinet_dashboard_links_to_the_control_page_of_its_cabinet() -> None:
    """Issue 14 item 3: from the cabinet dashboard the operator reaches the alert service's control page
    (alerting/control.py) for the cabinet shown, at the address of the ``control_url`` variable."""
    from alerting.control import CONTROL_PATH
    from dashboards.build import CONTROL_URL

    committed = json.loads((DASHBOARD_DIR / "cascade-cabinet.json").read_text(encoding="utf-8"))
    for lang, model in (("zh_CN", committed), ("en", build_all(lang="en")["cascade-cabinet"])):
        variable = next(v for v in model["templating"]["list"] if v["name"] == "control_url")
        assert variable["type"] == "textbox" and variable["query"] == CONTROL_URL
        [link] = [x for x in model["links"] if x["type"] == "link"]
        assert any(x["type"] == "dashboards" for x in model["links"]), "the usual links stay"
        panel_links = [x for p in model["panels"] for x in p.get("links", [])]
        assert panel_links == [link], "the commands table links there too"
        assert link["url"].startswith("${control_url}" + CONTROL_PATH + "?cabinet=${cabinet")
        assert link["targetBlank"] and not link["includeVars"]
        url = link["url"].replace("${control_url}", CONTROL_URL).replace("${cabinet:percentencode}", "C0003")
        parts = urllib.parse.urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == CONTROL_URL and parts.path == CONTROL_PATH
        expected = {"cabinet": ["C0003"]} | ({"lang": ["en"]} if lang == "en" else {})
        assert urllib.parse.parse_qs(parts.query) == expected, url
    assert committed["links"][-1]["title"] == "远程控制本柜"


def test_docs_describe_every_panel() -> None:
    """Every dashboard and panel is in the docs with its English and Chinese titles and its English
    description verbatim: descriptions quote catalogue thresholds, so a catalogue change that moves them
    must move the docs too."""
    docs = (REPO / "docs" / "dashboards.md").read_text(encoding="utf-8")
    chinese = build_all()
    for uid, model in build_all(lang="en").items():
        assert f"`{uid}`" in docs, uid
        assert f"\n## `{uid}` — {model['title']} · {chinese[uid]['title']} (" in docs, f"docs/dashboards.md: {uid}"
        section = docs.partition(f"\n## `{uid}`")[2].partition("\n## ")[0]  # same titles recur across dashboards
        for panel, zh in zip(model["panels"], chinese[uid]["panels"], strict=True):
            where = f"docs/dashboards.md: {uid} {panel['title']!r}"
            heading = re.search(rf"^\*\*{panel['id']}\. {re.escape(panel['title'])}\*\* · {re.escape(zh['title'])} "
                                r"\(.*?\) — (.*)$", section, re.MULTILINE)
            assert heading, where
            assert heading.group(1) == panel["description"], f"{where}: description differs from the generator"


# -- (c) every query against the live stack --------------------------------------------------------

def _queries(model: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(where, refId, datasource uid, query text) for every panel target, annotation and variable."""
    found = []
    for panel in model["panels"]:
        for target in panel["targets"]:
            text = target["query"] if target["datasource"]["uid"] == "cascade-influx" else target["expr"]
            found.append((panel["title"], target["refId"], target["datasource"]["uid"], text))
    for item in model["annotations"]["list"]:
        found.append((f"annotation {item['name']}", "annotation", item["datasource"]["uid"], item["target"]["query"]))
    for item in model["templating"]["list"]:
        if item["type"] == "query":
            found.append((f"variable {item['name']}", "variable", item["datasource"]["uid"], item["query"]))
    return found


_MACROS = {"$timeFilter": "time > now() - 1h", "$__rate_interval": "1m", "$__interval": "10s"}


def _substitute(text: str, variables: dict[str, str]) -> str:
    for macro, value in _MACROS.items():
        text = text.replace(macro, value)
    text = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], text)
    assert not re.search(r"\$\w|\$\{", text), text
    return text


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:  # Prometheus answers 400 with a JSON error body
        return json.loads(err.read() or b"{}") | {"http_status": err.code}


def _influx(url: str, query: str) -> tuple[str | None, int]:
    """(error or None, rows with a value) of one InfluxQL statement via /query.

    ``fill(null)`` answers every interval of the range; a row of nulls is not data.
    """
    body = _get_json(f"{url}/query?" + urllib.parse.urlencode({"db": "cascade", "q": query, "epoch": "ms"}))
    if "error" in body:
        return body["error"], 0
    rows = 0
    for result in body.get("results", []):
        if "error" in result:
            return result["error"], 0
        for series in result.get("series", []):
            values = [i for i, column in enumerate(series["columns"]) if column != "time"]
            rows += sum(1 for row in series.get("values") or [] if any(row[i] is not None for i in values))
    return None, rows


def _influx_rows(url: str, query: str) -> list[tuple[dict[str, str], list[Any]]]:
    """(tags, row) of every row one InfluxQL statement answers."""
    body = _get_json(f"{url}/query?" + urllib.parse.urlencode({"db": "cascade", "q": query, "epoch": "ms"}))
    return [(series.get("tags", {}), row) for result in body["results"] for series in result.get("series", [])
            for row in series["values"]]


def _prom(url: str, expr: str) -> tuple[str | None, int]:
    body = _get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", 0
    return None, len(body["data"]["result"])


def _run_all(influx_url: str, prom_url: str, variables: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """Run every query once: (errors, empty results not allowed). The languages run the same queries
    (test_chinese_by_default_english_by_option); the English titles make the report readable."""
    errors, empty = [], []
    for uid, model in build_all(lang="en").items():
        for where, ref, ds, text in _queries(model):
            query = _substitute(text, variables[uid])
            error, rows = (_influx(influx_url, query) if ds == "cascade-influx" else _prom(prom_url, query))
            label = f"{uid} / {where} / {ref}: {query}"
            if error:
                errors.append(f"{label}\n    -> {error}")
            elif rows == 0 and (uid, where, ref) not in EMPTY_ALLOWED:
                empty.append(label)
    return errors, empty


def _write(influx_url: str, lines: list[str]) -> None:
    req = urllib.request.Request(f"{influx_url}/write?db=cascade&precision=ns", data="\n".join(lines).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def _vehicle_lines(now: float) -> list[str]:
    """``vehicle`` and ``vehicle_battery`` lines of two vehicles' last reports (docs/schema.md)."""
    readings = [
        VehicleReading(vehicle_id=vehicle, fleet="fleet-bj", timestamp_ns=int((now - age) * 1e9),
                       received_ns=int((now - age + 0.4) * 1e9), model="EB-48", sequence=sequence, state=2,
                       powered_on=True, armed=True, position_valid=True, latitude_deg=39.9 + sequence / 1000,
                       longitude_deg=116.4, speed_kmh=18.0, odometer_km=1234.5,
                       battery=SlotReading(slot=1, battery_id=f"NM48-{vehicle}", soc_pct=64.0, temperature_c=31.5,
                                           voltage_v=51.2, charge_current_a=-6.0, battery_state=3))
        for vehicle, sequence, age in (("V0001", 41, 60.0), ("V0001", 42, 1.0), ("V0002", 7, 5.0))]
    lines, skipped = encode_points(readings)
    assert not skipped and len(lines) == 6
    return lines


def _vehicle_events(now: float) -> list[str]:
    """A level-3 alert on V0001's pack and a motor-lock command it acknowledged (site = fleet, cabinet =
    vehicle, as the alert and command services store them)."""
    alert = AlertEvent("over_temperature", "fleet-bj", "V0001", 1, "critical", 3, 0, "raise", 72.0, "NM48-V0001",
                       summary="L3 battery temperature high", timestamp_ns=int((now - 30) * 1e9),
                       category="battery_high_temperature")
    command = CommandResult(cabinet_id="V0001", command="motor_lock", slot=None, value=True, actor="user:noc-test",
                            requested_at=now - 20, ok=True, readback=True, completed_at=now - 19.5, site="fleet-bj")
    lines, skipped = encode_points([alert, command])
    assert not skipped and len(lines) == 2
    return lines


async def test_every_query_returns_data_on_a_live_stack(influxdb, prometheus_factory, alertmanager,
                                                        tmp_path) -> None:
    started = time.monotonic()
    profiles = [(name, find_profile(name)) for name in ("reference-cabinet", "volta-s8")]


    # A frozen simulator clock: scenario steps at 0s apply at once and stay.
    fleet = build_fleet(profiles, cabinets=4, base_port=free_port_block(4), clock=ManualClock(), seed=3)
    drill, down, noisy = fleet.cabinets[0], fleet.cabinets[1], fleet.cabinets[2]
    for text in (
        # offline cabinet: device_up 0, poll errors by kind
        f"name: down\ntarget: {{cabinet: {down.cabinet_id}}}\nsteps:\n  - {{at: 0s, unreachable: 1h}}\n",
        # garbage registers: decode errors by field
        f"name: junk\ntarget: {{cabinet: {noisy.cabinet_id}, slot: 1}}\n"
        "steps:\n  - {at: 0s, garbage: [voltage_v]}\n",
        # level 3 on the first reading, cabinet scope: flame → `alert` point, Alertmanager push
        f"name: flame\ntarget: {{cabinet: {drill.cabinet_id}}}\n"
        "steps:\n  - {at: 0s, set: {flame_detected: true}}\n",
        # level 3 on a slot with slot_cutoff → a real protective action and `command` point
        f"name: short\ntarget: {{cabinet: {drill.cabinet_id}, slot: 2}}\nsteps:\n"
        "  - {at: 0s, insert: {chemistry: lfp, nominal_voltage_v: 48}}\n"
        "  - {at: 0s, protect: {bms: [short_circuit]}}\n",
    ):
        fleet.start_scenario(parse_scenario(text, "test"))
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    # A vehicle ingest worker's series (cascade ingest serves them on its own /metrics): two reports
    # stored over MQTT, one over HTTPS, one refused as a duplicate.
    ingest_registry = CollectorRegistry()
    ingest = IngestMetrics(ingest_registry)
    ingest.accepted.labels("mqtt").inc(2)
    ingest.accepted.labels("https").inc()
    ingest.rejected.labels("mqtt", "duplicate").inc()
    ingest_server, _ = start_http_server(0, addr="127.0.0.1", registry=ingest_registry)
    cabinets = fleet.collector_configs(interval_s=0.3, timeout_s=0.5)
    influx = InfluxConfig(url=influxdb.url, database=influxdb.database, flush_interval_s=0.2,
                          spool_dir=str(tmp_path / "spool"))
    config = AppConfig(source="test", cabinets=cabinets, profiles=dict(profiles), influxdb=influx,
                       metrics_port=0, status_interval_s=0, backoff_cap_s=1.0)
    pipeline = Pipeline(config, registry=CollectorRegistry(), seed=5)
    # The vehicle command service's counters (cascade run serves them when it has a vehicles broker).
    CommandMetrics(pipeline.registry).commands.labels("motor_lock", "acked").inc()
    engine = Engine(load_rules(), state=AlertStore(tmp_path / "alerts.json"))
    service = alert_service_for(pipeline, engine, alertmanager_url=alertmanager.url, resend_interval_s=30)
    try:
        async with service, pipeline:
            rules = (SHIPPED_PROMETHEUS_DIR / "rules" / "cascade-health.yml").read_text()
            prom = prometheus_factory(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: ['rules/*.yml']\n"
                "scrape_configs:\n"
                f"  - job_name: cascade\n    static_configs: [{{targets: ['127.0.0.1:{pipeline.metrics_port}']}}]\n"
                f"  - job_name: alertmanager\n    static_configs: [{{targets: ['{alertmanager.url.split('//')[1]}']}}]\n"
                "  - job_name: cascade-ingest\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{ingest_server.server_port}']}}]\n",
                files={"rules/cascade-health.yml": rules})

            # A charging battery for the P-6.3 history dashboard, and two synthetic points: an
            # operator command and a level-2 alert on that battery (the real ones come from the
            # flame and short-circuit scenarios above).
            battery = None
            deadline = time.monotonic() + 15
            while battery is None and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                rows = await asyncio.to_thread(
                    influxdb.query, 'SELECT "battery_id", "site", "cabinet", "slot" FROM "slot" WHERE '
                                    f'"battery_state" = 1 AND "cabinet" != \'{down.cabinet_id}\' LIMIT 1')
                battery = rows[0] if rows else None
            assert battery, "no charging battery in the simulated fleet"
            now = time.time()
            await asyncio.to_thread(_write, influxdb.url, [
                encode_line("alert", {"site": battery["site"], "cabinet": battery["cabinet"],
                                      "slot": battery["slot"], "rule": "over_temperature", "severity": "warning"},
                            {"level": 2, "from_level": 1, "kind": "escalate", "value": 56.0,
                             "battery": battery["battery_id"], "summary": "Pack temperature high",
                             "diagnosis": "Pack temperature 56.0 °C ≥ 55 °C (level 2).",
                             "action": "Stop charging and check cabinet cooling."}, int(now * 1e9)),
                command_to_line(CommandResult(
                    cabinet_id=drill.cabinet_id, slot=3, command="slot_output", actor="user:noc-test", value=0,
                    ok=True, readback=0, error="", requested_at=now - 0.05, completed_at=now,
                    site=drill.state.site)),
            ])
            # Someone on call acknowledges one active alert: the on-call dashboard's acknowledged count and
            # time to acknowledge.
            active = engine.state.active()
            assert active, "no active alert to acknowledge"
            service.acknowledge(str(active[0].key), "noc-test", "on my way")
            # Two vehicles of one fleet, as the ingest workers store them: position and pack.
            await asyncio.to_thread(_write, influxdb.url, _vehicle_lines(now) + _vehicle_events(now))
            # What `cascade health analyse` stores: sessions, health rows and grading alerts of three packs.
            await asyncio.to_thread(_write, influxdb.url, health_lines(now))
            slots = [str(n) for n in range(1, drill.slot_count + 1)]
            variables = {
                "cascade-fleet": {"site": ".*"},  # the "All" value
                "cascade-cabinet": {"site": drill.state.site, "cabinet": drill.cabinet_id,
                                    "slot": "(" + "|".join(slots) + ")"},  # Grafana's regex form of "All"
                "cascade-battery": {"battery": battery["battery_id"]},
                "cascade-vehicles": {"fleet": ".*"},  # the "All" value
                "cascade-vehicle": {"fleet": "fleet-bj", "vehicle": "V0001"},
                "cascade-pipeline": {}, "cascade-regulator": {"fleet": "fleet-bj"}, "cascade-alarm-stats": {},
                "cascade-battery-health": {},
                "cascade-oncall": {},
                "cascade-second-life": {"battery": HEALTH_BATTERY},
            }
            # Wait for enough scrapes for rate() over 1m and the recording rules, then judge.
            deadline = time.monotonic() + 30
            while True:
                await asyncio.sleep(1.0)
                errors, empty = await asyncio.to_thread(_run_all, influxdb.url, prom.url, variables)
                if errors or not empty or time.monotonic() > deadline:
                    break
    finally:
        await server.stop()
        ingest_server.shutdown()
        ingest_server.server_close()
    assert not errors, "queries failed:\n" + "\n".join(errors)
    assert not empty, "queries returned no data:\n" + "\n".join(empty)
    # Values, not just rows: both vehicles reported in the last 10 minutes, each listed with its last pack.
    vehicles = {p["id"]: p for p in build_all(lang="en")["cascade-vehicles"]["panels"]}
    counted = _influx_rows(influxdb.url, _substitute(vehicles[1]["targets"][0]["query"], {"fleet": ".*"}))
    assert [(tags["fleet"], row[1]) for tags, row in counted] == [("fleet-bj", 2)]
    latest = _influx_rows(influxdb.url, _substitute(vehicles[4]["targets"][0]["query"], {"fleet": ".*"}))
    assert sorted((tags["vehicle"], row[1:]) for tags, row in latest) == [
        ("V0001", [39.942, 116.4, 64.0, 31.5, "NM48-V0001"]), ("V0002", [39.907, 116.4, 64.0, 31.5, "NM48-V0002"])]
    assert time.monotonic() - started < 60
