"""Small builders for Grafana dashboard JSON (classic schema, Grafana 10.4, schemaVersion 39).

Plain dicts, no dependency: every panel gets the templated datasource, a unit and a description,
and the grid positions are computed, so the dashboards in ``generate.py`` only say what to show.
"""

from __future__ import annotations

SCHEMA_VERSION = 39          # Grafana 10.4 (the version docker-compose.yml runs); newer Grafana migrates on load
GRAFANA_VERSION = "10.4.8"
DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr: str, legend: str = "__auto", *, instant: bool = False, fmt: str = "time_series",
           ref: str | None = None) -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "range": not instant, "instant": instant,
         "format": fmt, "editorMode": "code"}
    if ref:
        t["refId"] = ref
    return t


def _steps(thresholds) -> dict:
    steps = [{"color": "green", "value": None}]
    colors = ["orange", "red"]
    for i, value in enumerate(thresholds or ()):
        steps.append({"color": colors[min(i, 1)] if len(thresholds) > 1 else "red", "value": value})
    return {"mode": "absolute", "steps": steps}


def _reversed_steps(thresholds) -> dict:
    """Low is bad (cache hit ratio, up): red below the first value, orange below the second."""
    low, *rest = thresholds
    steps = [{"color": "red", "value": None}]
    if rest:
        steps += [{"color": "orange", "value": low}, {"color": "green", "value": rest[0]}]
    else:
        steps += [{"color": "green", "value": low}]
    return {"mode": "absolute", "steps": steps}


def _panel(kind: str, title: str, description: str, targets: list, unit: str, w: int, h: int,
           thresholds=None, low_is_bad: bool = False, min_=None, max_=None, decimals=None) -> dict:
    refs = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for t in targets:
        t.setdefault("refId", next(refs))
    defaults = {"unit": unit, "thresholds": (_reversed_steps(thresholds) if low_is_bad and thresholds
                                             else _steps(thresholds)),
                "color": {"mode": "palette-classic" if kind == "timeseries" else "thresholds"},
                "mappings": [], "links": []}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []}, "options": {},
            "_size": (w, h)}


def timeseries(title: str, description: str, targets: list, unit: str, *, w: int = 12, h: int = 8,
               stack: bool = False, thresholds=None, min_=0, max_=None, legend_table: bool = False,
               bars: bool = False) -> dict:
    p = _panel("timeseries", title, description, targets, unit, w, h, thresholds, min_=min_, max_=max_)
    p["fieldConfig"]["defaults"]["custom"] = {
        "drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 25 if stack else 10,
        "showPoints": "never", "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    if min_ == 0:
        p["fieldConfig"]["defaults"]["custom"]["axisSoftMin"] = 0
    p["options"] = {"tooltip": {"mode": "multi", "sort": "desc"},
                    "legend": {"showLegend": True, "displayMode": "table" if legend_table else "list",
                               "placement": "right" if legend_table else "bottom",
                               "calcs": ["mean", "max", "lastNotNull"] if legend_table else []}}
    return p


def stat(title: str, description: str, targets: list, unit: str, *, w: int = 4, h: int = 4,
         thresholds=None, low_is_bad: bool = False, mappings: list | None = None, text_mode: str = "auto",
         graph: bool = False, decimals=None) -> dict:
    p = _panel("stat", title, description, targets, unit, w, h, thresholds, low_is_bad, decimals=decimals)
    if mappings:
        p["fieldConfig"]["defaults"]["mappings"] = mappings
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background" if thresholds else "value", "graphMode": "area" if graph else "none",
                    "textMode": text_mode, "justifyMode": "auto", "orientation": "auto"}
    return p


def gauge(title: str, description: str, targets: list, unit: str, *, w: int = 4, h: int = 4,
          thresholds=None, low_is_bad: bool = False, max_=1) -> dict:
    p = _panel("gauge", title, description, targets, unit, w, h, thresholds, low_is_bad, min_=0, max_=max_)
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showThresholdMarkers": True, "showThresholdLabels": False}
    return p


def table(title: str, description: str, targets: list, unit: str, *, w: int = 24, h: int = 8,
          columns: dict | None = None, hide: tuple = ("Time",), units: dict | None = None,
          links: dict | None = None, sort: str | None = None, thresholds=None, low_is_bad: bool = False,
          cell_colors: dict | None = None, mappings: dict | None = None) -> dict:
    """Instant queries in table format merged on their labels; ``columns`` renames ``Value #A``...,
    ``units``/``links``/``cell_colors``/``mappings`` are per (renamed) column."""
    for t in targets:
        t.update({"instant": True, "range": False, "format": "table"})
    p = _panel("table", title, description, targets, unit, w, h, thresholds, low_is_bad)
    p["transformations"] = [{"id": "merge", "options": {}},
                            {"id": "organize", "options": {"excludeByName": {name: True for name in hide},
                                                            "renameByName": columns or {}, "indexByName": {}}}]
    overrides = []
    for name, unit_ in (units or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": name},
                          "properties": [{"id": "unit", "value": unit_}]})
    for name, link in (links or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": name},
                          "properties": [{"id": "links", "value": [link]}]})
    for name, mode in (cell_colors or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": name},
                          "properties": [{"id": "custom.cellOptions", "value": {"type": mode}}]})
    for name, maps in (mappings or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": name},
                          "properties": [{"id": "mappings", "value": maps}]})
    p["fieldConfig"]["overrides"] = overrides
    p["fieldConfig"]["defaults"]["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}
    p["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]},
                    "sortBy": [{"displayName": sort, "desc": True}] if sort else []}
    return p


def heatmap(title: str, description: str, targets: list, unit: str, *, w: int = 12, h: int = 8) -> dict:
    for t in targets:
        t.update({"format": "heatmap", "legendFormat": "{{le}}"})
    p = _panel("heatmap", title, description, targets, unit, w, h)
    p["options"] = {"calculate": False, "yAxis": {"unit": unit, "axisPlacement": "left"},
                    "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5,
                                            "fill": "dark-orange", "steps": 64, "reverse": False},
                    "rowsFrame": {"layout": "auto"}, "tooltip": {"show": True, "yHistogram": True},
                    "legend": {"show": True}, "exemplars": {"color": "rgba(255,0,255,0.7)"}}
    return p


def state_timeline(title: str, description: str, targets: list, unit: str, mappings: list, *,
                   w: int = 24, h: int = 8) -> dict:
    p = _panel("state-timeline", title, description, targets, unit, w, h)
    p["fieldConfig"]["defaults"]["mappings"] = mappings
    p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
    p["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 80, "lineWidth": 0}
    p["options"] = {"showValue": "never", "mergeValues": True, "alignValue": "left", "rowHeight": 0.9,
                    "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "single", "sort": "none"}}
    return p


def bargauge(title: str, description: str, targets: list, unit: str, *, w: int = 12, h: int = 8,
             thresholds=None, max_=None) -> dict:
    for t in targets:
        t.update({"instant": True, "range": False})
    p = _panel("bargauge", title, description, targets, unit, w, h, thresholds, min_=0, max_=max_)
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                    "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
    return p


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def value_map(mapping: dict) -> list:
    """``{value: (text, color)}`` to Grafana value mappings."""
    return [{"type": "value", "options": {str(k): {"text": text, "color": color, "index": i}
                                          for i, (k, (text, color)) in enumerate(mapping.items())}}]


# -- variables --------------------------------------------------------------------------------
def datasource_var() -> dict:
    return {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_var(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True) -> dict:
    return {"type": "query", "name": name, "label": label, "datasource": DS,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": query, "refresh": 2, "multi": multi, "includeAll": include_all,
            "allValue": ".+" if include_all else None, "current": {}, "options": [], "sort": 1,
            "regex": "", "hide": 0, "skipUrlSync": False}


def custom_var(name: str, label: str, values: list, default: str) -> dict:
    return {"type": "custom", "name": name, "label": label, "query": ",".join(values),
            "current": {"selected": True, "text": default, "value": default},
            "options": [{"selected": v == default, "text": v, "value": v} for v in values],
            "multi": False, "includeAll": False, "hide": 0, "skipUrlSync": False}


# -- dashboard --------------------------------------------------------------------------------
def layout(items: list) -> list:
    """Grid positions: rows span the width; panels flow left to right, wrapping at 24 columns."""
    out, x, y, row_h, next_id = [], 0, 0, 0, 1
    for item in items:
        item = dict(item)
        item["id"] = next_id
        next_id += 1
        if item["type"] == "row":
            y += row_h
            x, row_h = 0, 0
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            w, h = item.pop("_size")
            if x + w > 24:
                y += row_h
                x, row_h = 0, 0
            item["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x += w
            row_h = max(row_h, h)
        out.append(item)
    return out


def dashboard(uid: str, title: str, description: str, variables: list, items: list, *,
              tags: tuple = (), links: list | None = None, time_from: str = "now-1h") -> dict:
    return {
        "id": None, "uid": uid, "title": title, "description": description,
        "tags": ["dbperf", *tags], "timezone": "browser", "editable": False, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s", "liveNow": False,
        "time": {"from": time_from, "to": "now"}, "timepicker": {},
        "fiscalYearStartMonth": 0, "weekStart": "",
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": links if links is not None else [
            {"title": "dbperf dashboards", "type": "dashboards", "tags": ["dbperf"], "asDropdown": True,
             "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
             "tooltip": "", "url": ""}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": layout(items),
    }
