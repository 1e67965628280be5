"""The Grafana dashboard and the alert rules only use metrics the code exports.

Every PromQL expression of monitoring/grafana/dashboards/crm-triggers.json (every panel,
rows and collapsed rows included) and of monitoring/prometheus/alerts.yml is reduced to the
metric names it reads, which must be sample names that `monitoring.metrics` exports (or
Prometheus' own synthetic series). The dashboard's structure is checked too, and every
expression is parsed by promtool.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "monitoring" / "grafana" / "dashboards" / "crm-triggers.json"
ALERTS_PATH = ROOT / "monitoring" / "prometheus" / "alerts.yml"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
ALERTS: dict[str, Any] = yaml.safe_load(ALERTS_PATH.read_text())

# Series Prometheus makes itself: a target's scrape health, and its alerts.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}
DATASOURCE_UID = "prometheus"
# Grafana's built-in variables that may appear in a query.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}

# --- a PromQL metric-name extractor -------------------------------------------------------

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{?\w+(?::\w+)?\}?)
    | (?P<number>\.?[0-9](?:[eE][+-]|[0-9a-zA-Z_.])*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<open>[({\[])
    | (?P<close>[)}\]])
    | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=,@:!])
    """,
    re.VERBOSE,
)
_CLOSING = {"(": ")", "{": "}", "[": "]"}
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")


def _tokens(expr: str) -> list[tuple[str, str]]:
    """The expression's tokens, without spaces, comments, and the contents of label
    matchers ``{...}`` and ranges ``[...]`` (a ``{__name__="x"}`` matcher gives ``x``)."""
    out: list[tuple[str, str]] = []
    stack: list[str] = []
    skipped_start = 0
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind, text = match.lastgroup or "", match.group()
        pos = match.end()
        inside = any(b in "{[" for b in stack)
        if kind == "open":
            if text in "{[" and not inside:
                skipped_start = pos
            stack.append(text)
        elif kind == "close":
            if not stack or _CLOSING[stack[-1]] != text:
                raise ValueError(f"unbalanced {text!r} in {expr!r}")
            opened = stack.pop()
            if opened == "{" and not any(b in "{[" for b in stack):
                for name in _NAME_MATCHER.finditer(expr[skipped_start : pos - 1]):
                    out.append(("ident", name.group(1) or name.group(2)))
                    out.append(("matcher", "{}"))
        if (
            kind in {"space", "comment"}
            or (inside and kind != "close")
            or (kind in {"open", "close"} and text in "{}[]")
        ):
            continue
        out.append((kind, text))
    if stack:
        raise ValueError(f"unclosed {stack[-1]!r} in {expr!r}")
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: not its functions, aggregations,
    keywords, label names, strings, numbers, durations or Grafana variables."""
    tokens = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident":
            word = text.lower()
            if word in LABEL_LIST_KEYWORDS:
                if following == "(":  # skip the label list
                    depth, i = 0, i + 1
                    while True:
                        depth += {"(": 1, ")": -1}.get(tokens[i][1], 0)
                        if depth == 0:
                            break
                        i += 1
            elif word in KEYWORDS or word in AGGREGATIONS or following == "(":
                pass  # a keyword, an aggregation or a function call
            else:
                names.add(text)
        i += 1
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "histogram_quantile(0.99, sum by (connector, le) (rate(crm_delivery_latency_"
            'seconds_bucket{job=~"$job", note="a}b[c", x!~\'y"z\'}[$__rate_interval])))',
            {"crm_delivery_latency_seconds_bucket"},
        ),
        (
            "sum by (job, instance) (crm_consumer_lag) > 0\nunless\n"
            "sum by (job, instance) (rate(crm_events_total[5m])) > 0",
            {"crm_consumer_lag", "crm_events_total"},
        ),
        (
            "deriv(sum(job:lag:sum)[10m:1m]) > 0 and on (job) group_left (version, pack) "
            "crm_build_info offset -5m",
            {"job:lag:sum", "crm_build_info"},
        ),
        (
            'sum(rate(x_total[5m])) by (pack) / ignoring(reason) count_values("le", y)'
            " * 1e+3 + Inf - 0x1F / .5 ^ NaN",
            {"x_total", "y"},
        ),
        ('{__name__="crm_ready", job="w"} == bool 0', {"crm_ready"}),
        (
            "time() - crm_last_progress_timestamp_seconds @ end()",
            {"crm_last_progress_timestamp_seconds"},
        ),
        ('absent(up{job="crm-triggers-worker"})', {"up"}),
        ("SUM BY (le) (a) AND b # c_total, in a comment", {"a", "b"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        (
            "topk(5, sum without (instance) (rate(crm_events_total[1h:5m] offset 1d)))",
            {"crm_events_total"},
        ),
        ("max_over_time(crm_delivery_circuit_open[1m]) == 1", {"crm_delivery_circuit_open"}),
        ("vector(1) + scalar(on_call)", {"on_call"}),
    ],
)
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", "x{a='b'", "x]", "x ? y"])
def test_metric_names_refuses_broken_expressions(expr: str) -> None:
    with pytest.raises(ValueError):
        metric_names(expr)


# --- the dashboard --------------------------------------------------------------------------


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in panels(DASHBOARD):
        for target in panel.get("targets", []):
            yield (
                f"panel {panel['id']} {panel.get('title')!r} {target.get('refId')}",
                target["expr"],
            )


def alert_exprs() -> Iterator[tuple[str, str]]:
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]


@pytest.fixture(scope="module")
def exported() -> set[str]:
    from monitoring.metrics import exported_sample_names  # written alongside these tests

    names = exported_sample_names()
    assert "crm_events_total" in names and "up" not in names
    return names


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_read_exported_metrics(source: str, exported: set[str]) -> None:
    exprs = dict(dashboard_exprs() if source == "dashboard" else alert_exprs())
    assert exprs
    unknown = {
        where: sorted(metric_names(expr) - exported - SYNTHETIC) for where, expr in exprs.items()
    }
    unknown = {where: names for where, names in unknown.items() if names}
    assert not unknown, f"metrics the code does not export: {unknown}"


def test_dashboard_identity() -> None:
    assert DASHBOARD["uid"] == "crm-triggers" and DASHBOARD["title"]
    assert DASHBOARD.get("id") is None  # provisioned: Grafana assigns the id
    assert 36 <= DASHBOARD["schemaVersion"] <= 41  # Grafana 10/11


def test_panel_ids_unique() -> None:
    ids = [panel["id"] for panel in panels(DASHBOARD)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"


def test_panels_use_the_prometheus_datasource() -> None:
    wrong = []
    for panel in panels(DASHBOARD):
        if panel["type"] == "row":
            assert panel.get("collapsed") or not panel.get("panels"), panel["title"]
            continue
        assert panel.get("targets"), f"panel {panel['id']} {panel['title']!r}: no query"
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        if any((s or {}).get("uid") != DATASOURCE_UID for s in sources):
            wrong.append(f"{panel['id']} {panel['title']!r}")
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query" and variable["datasource"]["uid"] != DATASOURCE_UID:
            wrong.append(f"variable ${variable['name']}")
    assert not wrong, f"not on datasource uid {DATASOURCE_UID!r}: {wrong}"


def test_panels_fit_the_grid() -> None:
    for panel in panels(DASHBOARD):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_variables_are_defined() -> None:
    defined = {v["name"] for v in DASHBOARD["templating"]["list"]} | GRAFANA_BUILTINS
    for where, expr in dashboard_exprs():
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= defined, f"{where}: undefined variables {sorted(used - defined)}"


def test_dashboard_covers_the_issue() -> None:
    """The signals the SRE view asked for each have a panel."""
    read = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    wanted = {
        "crm_events_total", "crm_consumer_lag", "crm_event_processing_seconds_bucket",
        "crm_event_to_action_seconds_bucket", "crm_batch_duration_seconds_bucket",
        "crm_delivery_latency_seconds_bucket", "crm_dead_letters_total",
        "crm_rule_decisions_total", "crm_actions_total", "crm_delivery_actions_total",
        "crm_delivery_retries_total", "crm_delivery_circuit_open",
        "crm_delivery_buffered_actions", "crm_delivery_held_actions", "crm_delivery_lag",
        "crm_rule_eval_errors_total", "crm_rules_loaded", "crm_ready",
        "crm_assigned_partitions", "crm_state_keys", "crm_state_disk_bytes",
        "process_resident_memory_bytes", "process_cpu_seconds_total",
    }  # fmt: skip
    assert not wanted - read, f"no panel reads {sorted(wanted - read)}"


def test_dashboard_queries_parse(promtool: Path, tmp_path: Path) -> None:
    """promtool parses every query, with Grafana's variables replaced by plain values."""
    values = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

    def plain(expr: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ".*"), expr)

    exprs = list(dashboard_exprs())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query:{i}", "expr": plain(expr)}
                    for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    where = "\n".join(f"dashboard:query:{i} = {w}" for i, (w, _) in enumerate(exprs))
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{where}"
