"""Building blocks for Grafana dashboard JSON: datasource references, targets, panels, variables.

Plain dicts, no Grafana SDK at run time: the generator must run without extra dependencies. The
shapes follow Grafana 11's dashboard model (schemaVersion 39): tests/test_dashboards.py decodes every
generated dashboard with the grafana-foundation-sdk models and fails on any key the models drop or any
value of the wrong type, so a field Grafana would ignore cannot pass unnoticed. Every panel and target
refers to a provisioned datasource by uid (provisioning/grafana/datasources/datasources.yml).

Texts are written once per language with :func:`dashboards.i18n.t` (Simplified Chinese first).
"""

from __future__ import annotations

from typing import Any

from dashboards.i18n import t

__all__ = [
    "ALERTMANAGER", "INFLUX", "LEVEL_COLOURS", "PROMETHEUS", "annotation", "bargauge", "cascade_links", "dashboard",
    "detected_mappings",
    "geomap", "influx", "influx_variable", "level_mappings", "map_layer", "prom", "right_axis", "stat", "table",
    "textbox_variable", "timeseries",
]

INFLUX = {"type": "influxdb", "uid": "cascade-influx"}
PROMETHEUS = {"type": "prometheus", "uid": "cascade-prometheus"}
ALERTMANAGER = {"type": "alertmanager", "uid": "cascade-alertmanager"}

Panel = dict[str, Any]

# Alert levels as the warning engine uses them (docs/warnings.md): 1 notice, 2 warning, 3 critical.
# One colour per level, shared by level columns and by the catalogue-derived value thresholds
# (dashboards/build.py), so "orange" means level 2 on every panel.
LEVEL_COLOURS = {1: "yellow", 2: "orange", 3: "red"}
LEVEL_STEPS = [{"color": "green", "value": None}] + [{"color": colour, "value": level}
                                                     for level, colour in LEVEL_COLOURS.items()]


def level_mappings() -> list[dict[str, Any]]:
    """Level numbers as the operators say them (0 = cleared)."""
    return [{"type": "value", "options": {
        "0": {"text": t("已恢复", "cleared"), "color": "green", "index": 0},
        "1": {"text": t("1级 提示", "1 notice"), "color": "yellow", "index": 1},
        "2": {"text": t("2级 警告", "2 warning"), "color": "orange", "index": 2},
        "3": {"text": t("3级 严重", "3 critical"), "color": "red", "index": 3}}}]


def detected_mappings() -> list[dict[str, Any]]:
    return [{"type": "value", "options": {
        "0": {"text": t("正常", "clear"), "color": "green", "index": 0},
        "1": {"text": t("检测到", "DETECTED"), "color": "red", "index": 1}}}]


# -- targets -------------------------------------------------------------------------------------

def influx(query: str, *, ref: str = "A", alias: str = "", table_format: bool = False) -> dict[str, Any]:
    """A raw InfluxQL target; ``alias`` may use ``$tag_<key>`` and ``$col``."""
    target: dict[str, Any] = {"datasource": INFLUX, "query": query, "rawQuery": True, "refId": ref,
                              "resultFormat": "table" if table_format else "time_series"}
    if alias:
        target["alias"] = alias
    return target


def prom(expr: str, *, ref: str = "A", legend: str = "", instant: bool = False,
         table_format: bool = False) -> dict[str, Any]:
    """A PromQL target; instant for stats and tables, range for graphs."""
    return {"datasource": PROMETHEUS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto",
            "instant": instant, "range": not instant, "format": "table" if table_format else "time_series",
            "editorMode": "code"}


# -- panels --------------------------------------------------------------------------------------

def _panel(kind: str, title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "",
           w: int = 12, h: int = 8, defaults: dict[str, Any] | None = None,
           options: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None,
           transformations: list[dict[str, Any]] | None = None, links: list[dict[str, Any]] | None = None) -> Panel:
    datasource = targets[0]["datasource"]
    if any(t["datasource"] != datasource for t in targets):
        raise ValueError(f"panel {title!r}: all targets must use the same datasource")
    field_defaults: dict[str, Any] = dict(defaults or {})
    if unit:
        field_defaults["unit"] = unit
    panel: Panel = {"type": kind, "title": title, "description": description, "datasource": datasource,
                    "targets": targets, "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
                    "options": options or {}, "gridPos": {"w": w, "h": h, "x": 0, "y": 0}}
    if transformations:
        panel["transformations"] = transformations
    if links:
        panel["links"] = links
    return panel


def timeseries(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "", w: int = 12,
               h: int = 8, stack: bool = False, bars: bool = False, thresholds: list[dict[str, Any]] | None = None,
               overrides: list[dict[str, Any]] | None = None, axis_label: str = "") -> Panel:
    """A graph; every series shares ``unit`` unless an override (:func:`right_axis`) moves it."""
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10,
                              "spanNulls": False, "showPoints": "never"}
    if axis_label:
        custom["axisLabel"] = axis_label
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: dict[str, Any] = {"custom": custom}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        custom["thresholdsStyle"] = {"mode": "line"}
    return _panel("timeseries", title, description, targets, unit=unit, w=w, h=h, defaults=defaults,
                  overrides=overrides,
                  options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                      "calcs": ["lastNotNull", "max"]},
                           "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "", w: int = 6,
         h: int = 4, thresholds: list[dict[str, Any]] | None = None,
         mappings: list[dict[str, Any]] | None = None) -> Panel:
    defaults: dict[str, Any] = {"thresholds": {"mode": "absolute", "steps": thresholds or [
        {"color": "green", "value": None}]}, "mappings": mappings or []}
    return _panel("stat", title, description, targets, unit=unit, w=w, h=h, defaults=defaults,
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                           "justifyMode": "auto", "orientation": "auto"})


def bargauge(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "", w: int = 12,
             h: int = 8, thresholds: list[dict[str, Any]] | None = None) -> Panel:
    defaults = {"thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
                "min": 0}
    return _panel("bargauge", title, description, targets, unit=unit, w=w, h=h, defaults=defaults,
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                           "valueMode": "color"})


def table(title: str, description: str, targets: list[dict[str, Any]], *, w: int = 24, h: int = 8,
          sort_by: str = "", descending: bool = True, overrides: list[dict[str, Any]] | None = None,
          transformations: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
          links: list[dict[str, Any]] | None = None) -> Panel:
    """A table; ``labels`` maps result columns to the headers shown (overrides still match the column);
    ``links``: the panel's own links (its header menu), e.g. to another tool for what the table shows."""
    options: dict[str, Any] = {"showHeader": True, "cellHeight": "sm",
                               "footer": {"show": False, "reducer": ["sum"]}}
    labels = labels or {}
    if sort_by:
        options["sortBy"] = [{"displayName": labels.get(sort_by, sort_by), "desc": descending}]
    return _panel("table", title, description, targets, w=w, h=h, options=options,
                  overrides=_with_labels(overrides or [], labels), transformations=transformations, links=links)


def _with_labels(overrides: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """One override per column: the header (``displayName``) joins the column's other properties."""
    merged = [dict(o, properties=list(o["properties"])) for o in overrides]
    by_field = {o["matcher"]["options"]: o for o in merged if o["matcher"]["id"] == "byName"}
    for field, label in labels.items():
        if field not in by_field:
            by_field[field] = {"matcher": {"id": "byName", "options": field}, "properties": []}
            merged.append(by_field[field])
        by_field[field]["properties"].append({"id": "displayName", "value": label})
    return merged


def map_layer(kind: str, name: str, *, ref: str = "", latitude: str = "latitude", longitude: str = "longitude",
              color: str = "green", color_field: str = "", size: int = 6, arrow: bool = False) -> dict[str, Any]:
    """A Geomap data layer drawing the rows of query ``ref`` (every frame when empty) at their
    ``latitude``/``longitude`` columns:
    ``markers`` (one symbol per row, coloured by ``color_field`` through the panel's thresholds when given)
    or ``route`` (the rows joined in time order, with direction arrows when ``arrow``)."""
    style: dict[str, Any] = {"color": {"fixed": color, **({"field": color_field} if color_field else {})},
                             "opacity": 0.8, "size": {"fixed": size, "min": 2, "max": 15},
                             "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"}}
    config: dict[str, Any] = {"style": style}
    if kind == "route":
        style["lineWidth"] = 3
        config["arrow"] = 1 if arrow else 0
    else:
        config["showLegend"] = True
    layer: dict[str, Any] = {"type": kind, "name": name, "config": config, "tooltip": True,
                             "location": {"mode": "coords", "latitude": latitude, "longitude": longitude}}
    if ref:
        layer["filterData"] = {"id": "byRefId", "options": ref}
    return layer


def geomap(title: str, description: str, targets: list[dict[str, Any]], layers: list[dict[str, Any]], *,
           w: int = 24, h: int = 12, thresholds: list[dict[str, Any]] | None = None,
           transformations: list[dict[str, Any]] | None = None) -> Panel:
    """A map fitted to its data (OpenStreetMap-based default basemap); ``layers`` from :func:`map_layer`.
    ``thresholds`` colour the layers' ``color_field`` (e.g. the alert levels)."""
    defaults: dict[str, Any] = {"color": {"mode": "thresholds"}, "thresholds": {
        "mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]}}
    return _panel("geomap", title, description, targets, unit="none", w=w, h=h, defaults=defaults,
                  transformations=transformations,
                  options={"view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 13, "allLayers": True},
                           "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True,
                                        "showScale": True, "showMeasure": False, "showDebug": False},
                           "basemap": {"type": "default", "name": t("底图", "Basemap")},
                           "layers": layers, "tooltip": {"mode": "details"}})


def override(field: str, **properties: Any) -> dict[str, Any]:
    """A field override by name: ``override("level", mappings=LEVEL_MAPPINGS)``."""
    return {"matcher": {"id": "byName", "options": field},
            "properties": [{"id": key, "value": value} for key, value in sorted(properties.items())]}


def color_cells(field: str, **properties: Any) -> dict[str, Any]:
    """Override colouring a table column's cell background from its value mappings / thresholds."""
    return override(field, **{"custom.cellOptions": {"type": "color-background"}}, **properties)


def link_override(field: str, title: str, url: str) -> dict[str, Any]:
    """A data link on a column; ``url`` should carry ``${__url_time_range}`` to keep the time range."""
    return override(field, links=[{"title": title, "url": url, "targetBlank": False}])


def right_axis(ref: str, unit: str, label: str) -> dict[str, Any]:
    """The series of query ``ref`` on a second, right-hand axis in ``unit``: one unit per axis."""
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": "unit", "value": unit}, {"id": "custom.axisPlacement", "value": "right"},
                           {"id": "custom.axisLabel", "value": label}]}


# -- variables and annotations -------------------------------------------------------------------

def influx_variable(name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False,
                    all_value: str | None = None, numeric_sort: bool = False) -> dict[str, Any]:
    """A query variable answered by InfluxDB (SHOW TAG VALUES ...), refreshed on dashboard load."""
    variable: dict[str, Any] = {"type": "query", "name": name, "label": label, "datasource": INFLUX,
                                "query": query, "refresh": 1, "multi": multi,
                                "includeAll": include_all, "sort": 3 if numeric_sort else 1,
                                "current": {}, "options": [], "hide": 0, "regex": "", "skipUrlSync": False}
    if all_value is not None:
        variable["allValue"] = all_value
    return variable


def textbox_variable(name: str, label: str, default: str = "", description: str = "") -> dict[str, Any]:
    return {"type": "textbox", "name": name, "label": label, "query": default, "description": description,
            "current": {"text": default, "value": default}, "options": [], "hide": 0, "skipUrlSync": False}


def annotation(name: str, query: str, *, color: str, text: str = "summary",
               tags: str = "rule,severity,kind", title: str = "") -> dict[str, Any]:
    """An InfluxQL annotation query; ``text``/``tags``/``title`` name the result columns.

    Grafana 11's InfluxDB datasource reads an annotation only from its ``target``: the query runs when
    the target has ``fromAnnotations`` and a ``query``, and the column mappings are read from the target.
    The old top-level ``query``/``textColumn`` form is migrated into a target only when the annotation
    already has one (``prepareAnnotation`` in Grafana's InfluxDB plugin), so without it the overlay
    would stay empty without an error.
    """
    target = {"refId": "Anno", "query": query, "rawQuery": True, "resultFormat": "table",
              "fromAnnotations": True, "textEditor": True, "textColumn": text, "tagsColumn": tags,
              "titleColumn": title, "timeEndColumn": ""}
    return {"datasource": INFLUX, "enable": True, "hide": False, "iconColor": color, "name": name,
            "target": target}


# -- dashboard -----------------------------------------------------------------------------------

def cascade_links() -> list[dict[str, Any]]:
    """Every dashboard links to the others (tag ``cascade``), keeping the time range and the variables."""
    return [{"title": t("Cascade 仪表板", "Cascade dashboards"), "type": "dashboards", "tags": ["cascade"],
             "asDropdown": True, "includeVars": True, "keepTime": True, "targetBlank": False,
             "icon": "external link", "tooltip": "", "url": ""}]


def _layout(panels: list[Panel]) -> list[Panel]:
    """Number the panels 1..n and place them left to right, wrapping at Grafana's 24 columns."""
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        panel["id"] = number
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[Panel], *, tags: list[str],
              variables: list[dict[str, Any]] | None = None, annotations: list[dict[str, Any]] | None = None,
              editable: bool = True, time_from: str = "now-6h", refresh: str = "30s",
              links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": sorted(tags),
        "editable": editable, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "timezone": "browser", "time": {"from": time_from, "to": "now"}, "refresh": refresh,
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "timepicker": {}, "links": links if links is not None else cascade_links(),
        "templating": {"list": variables or []},
        "annotations": {"list": annotations or []},
        "panels": _layout(panels),
    }
