#!/usr/bin/env python3
"""Checks the dashboard and the alert rules against the metrics hookgate really has.

  check_metrics.py METRICS_TEXT PROMQL_RULES_OUT

- The dashboard matches deploy/grafana/dashboard.schema.json (jsonschema), its panel IDs are
  unique and its panels do not overlap on Grafana's 24-column grid.
- Every metric name that the dashboard or the alert rules use is registered in src/metrics.rs
  AND served by a running gateway (METRICS_TEXT, a scrape of its /metrics); histogram names
  carry _bucket/_count/_sum. Every `outcome`, `op` or `result` value they name is one the code defines.
- Writes each dashboard query, its Grafana variables replaced by plain PromQL, as a recording
  rule to PROMQL_RULES_OUT, so `promtool check rules` parses every one of them.
"""
import json
import pathlib
import re
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def fail(msg):
    errors.append(msg)


metrics_rs = (ROOT / "src/metrics.rs").read_text()
registered = set(re.findall(r'"(hookgate_[a-z_]+)"', metrics_rs))
histograms = {
    m for m in registered
    if re.search(r'HistogramOpts::new\(\s*"' + m + '"', metrics_rs)
}
outcomes = set(re.findall(r'Outcome::\w+ => "([a-z_]+)"', metrics_rs))
ops = set(re.findall(r'StateOp::\w+ => "([a-z_]+)"', metrics_rs))
reload_impl = metrics_rs.split("impl ReloadResult", 1)[1].split("\n}\n", 1)[0] if "impl ReloadResult" in metrics_rs else ""
results = set(re.findall(r'Self::\w+ => "([a-z_]+)"', reload_impl))
if not (registered and histograms and outcomes and ops):
    sys.exit(f"could not read the metric names from src/metrics.rs: {registered} {histograms} {outcomes} {ops}")

scraped_text = pathlib.Path(sys.argv[1]).read_text()
scraped = set(re.findall(r"^(hookgate_[a-z_]+)[{ ]", scraped_text, re.M))


def known_series(name):
    """The metric a series name belongs to, or None."""
    if name in registered and name not in histograms:
        return name
    for suffix in ("_bucket", "_count", "_sum"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base in histograms:
            return base
    return None


def check_expr(where, expr):
    for name in set(re.findall(r"\bhookgate_[a-z_]+\b", expr)):
        base = known_series(name)
        if base is None:
            fail(f"{where}: `{name}` is not a metric of src/metrics.rs")
        elif name not in scraped:
            fail(f"{where}: `{name}` is not served by the running gateway's /metrics")
    for label, allowed in (("outcome", outcomes), ("op", ops), ("result", results)):
        for _, value in re.findall(label + r'\s*(=~|=)\s*"([^"]*)"', expr):
            for v in value.split("|"):
                if v not in allowed:
                    fail(f"{where}: {label} `{v}` is not one of {sorted(allowed)}")


# ---- alert rules
rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
n_rules = 0
for group in rules["groups"]:
    for rule in group["rules"]:
        n_rules += 1
        check_expr(f"alerts.yaml {rule.get('alert') or rule.get('record')}", rule["expr"])

# ---- dashboard
dash = json.loads((ROOT / "deploy/grafana/hookgate.json").read_text())
schema = json.loads((ROOT / "deploy/grafana/dashboard.schema.json").read_text())
validator = jsonschema.Draft202012Validator(schema)
for e in sorted(validator.iter_errors(dash), key=lambda e: list(e.path)):
    fail(f"hookgate.json {'/'.join(map(str, e.path))}: {e.message}")

ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    fail(f"hookgate.json: duplicate panel ids {ids}")
cells = {}
for p in dash["panels"]:
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        fail(f"hookgate.json panel {p['id']} `{p['title']}` is wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                fail(f"hookgate.json panel {p['id']} `{p['title']}` overlaps panel {cells[(x, y)]}")
                break
            cells[(x, y)] = p["id"]

variables = {v["name"] for v in dash["templating"]["list"]}
for v in dash["templating"]["list"]:
    if v["type"] == "query":
        check_expr(f"hookgate.json variable {v['name']}", v["definition"])


def plain_promql(expr):
    """The query as Prometheus sees it once Grafana has replaced its variables."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    for name in re.findall(r"\$(\w+)", expr):
        if name not in variables:
            fail(f"hookgate.json: unknown variable ${name} in `{expr}`")
    return re.sub(r"\$(\w+)", ".*", expr)


recording = []
n_queries = 0
for p in dash["panels"]:
    for t in p.get("targets", []):
        n_queries += 1
        where = f"hookgate.json panel {p['id']} `{p['title']}` {t['refId']}"
        check_expr(where, t["expr"])
        recording.append({"record": f"dashboard:panel_{p['id']}:{t['refId'].lower()}", "expr": plain_promql(t["expr"])})
pathlib.Path(sys.argv[2]).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": recording}]}, sort_keys=False))

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {n_rules} alert rules and {n_queries} dashboard queries use only the metrics and label "
      f"values hookgate has ({len(registered)} metrics, {len(outcomes)} outcomes, {len(ops)} state ops, {len(results)} reload results); "
      f"the dashboard matches its schema, with {len(ids)} panels and no overlap")
