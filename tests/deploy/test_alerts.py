"""The alerting rules: valid for Prometheus (promtool check rules), behaving as documented
(promtool test rules: every alert fires after its `for:`, not a minute before, and stays quiet
on a healthy case), following the conventions (severity, summary, description, runbook_url
with a runbook section), and the dashboards' own conventions.

promtool is built from github.com/prometheus/prometheus at the version pinned in
hack/versions.env (hack/build-binaries.sh)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .conftest import REPO, RULES, run, tool

TESTS = sorted((REPO / "alerts/tests").glob("*.yaml"))
RUNBOOKS = REPO / "docs/runbooks.md"
SEVERITIES = {"critical", "warning", "info"}


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def duration_minutes(text: str) -> int:
    m = re.fullmatch(r"(\d+)([mh])", text)
    assert m, f"unexpected duration {text}"
    return int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def test_promtool_check_rules():
    out = run([tool("promtool"), "check", "rules", str(RULES)]).stdout
    assert "SUCCESS" in out, out


def test_promtool_test_rules():
    out = run([tool("promtool"), "test", "rules", *map(str, TESTS)])
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_is_tested_firing_late_enough_and_quiet_when_healthy():
    """For each alert, the promtool tests hold: a firing case; in that same test a check a
    minute before it fires (so `for:` is what holds it back), at or after `for:` since the
    condition turned true; and a test where it never fires."""
    fires: dict[str, list[int]] = {}
    quiet_before: dict[str, list[int]] = {}
    healthy: set[str] = set()
    for f in TESTS:
        for t in yaml.safe_load(f.read_text())["tests"]:
            firing_here = {}
            quiet_here = {}
            for case in t.get("alert_rule_test", []):
                minutes = duration_minutes(case["eval_time"])
                target = firing_here if case.get("exp_alerts") else quiet_here
                target.setdefault(case["alertname"], []).append(minutes)
            for name, times in firing_here.items():
                fires.setdefault(name, []).extend(times)
                if any(q == min(times) - 1 for q in quiet_here.get(name, [])):
                    quiet_before.setdefault(name, []).append(min(times))
            for name in quiet_here:
                if name not in firing_here:
                    healthy.add(name)
    names = {a["alert"] for a in alerts()}
    assert names - set(fires) == set(), "alerts never tested firing"
    assert names - set(quiet_before) == set(), "alerts not checked one minute before firing"
    assert names - healthy == set(), "alerts without a test where they stay quiet"
    for a in alerts():
        # It cannot fire before `for:` has passed since its condition could first be true.
        assert min(fires[a["alert"]]) >= duration_minutes(a["for"]), a["alert"]


def test_alert_conventions_and_runbooks():
    runbook_text = RUNBOOKS.read_text()
    sections = set(re.findall(r"^## (\S+)$", runbook_text, re.M))
    for a in alerts():
        name = a["alert"]
        assert a["labels"]["severity"] in SEVERITIES, name
        assert set(a["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert a["annotations"]["runbook_url"].endswith(f"docs/runbooks.md#{name.lower()}"), name
        assert name in sections, f"docs/runbooks.md has no section '## {name}'"
        body = runbook_text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
            assert part in body, f"{name}: runbook lacks {part}"
        assert "kubectl get --raw" in body, f"{name}: no diagnosis with kubectl get --raw"
    assert sections - {a["alert"] for a in alerts()} == set(), "runbook of no alert"


def test_dashboard_conventions():
    """The lessons of broken dashboards elsewhere, checked on ours: schemaVersion >= 39,
    stable uids, the datasource as the ${datasource} variable everywhere, chained variables,
    `sum by (le, ...)` inside every histogram_quantile, `$__rate_interval` in every rate, no
    removed vLLM name used alone."""
    uids = set()
    for path in sorted((REPO / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        assert d["schemaVersion"] >= 39, path
        assert d["uid"] == path.stem and d["uid"] not in uids, path
        uids.add(d["uid"])
        variables = d["templating"]["list"]
        assert variables[0]["type"] == "datasource" and variables[0]["name"] == "datasource"
        names = [v["name"] for v in variables[1:]]
        assert names[0] == "namespace", path
        for i, v in enumerate(variables[1:]):
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert v["allValue"] == ".*" and v["includeAll"] and v["multi"]
            # Chained: each variable's query filters by every variable before it.
            for earlier in names[:i]:
                assert f'=~"${earlier}"' in v["definition"], (path.name, v["name"], earlier)
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for t in p["targets"]:
                expr = t["expr"]
                assert t["datasource"] == p["datasource"]
                for m in re.finditer(r"histogram_quantile\([0-9.]+, sum by \(([^)]*)\)", expr):
                    assert m.group(1).split(", ")[0] == "le", expr
                assert expr.count("histogram_quantile(") == \
                    len(re.findall(r"histogram_quantile\([0-9.]+, sum by \(le", expr)), expr
                assert expr.count("rate(") == expr.count("[$__rate_interval])"), expr
                assert " = " not in expr and '="$' not in expr, "matchers on variables use =~"
                for old, new in [("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
                                 ("vllm:time_per_output_token_seconds",
                                  "vllm:inter_token_latency_seconds")]:
                    if old in expr:
                        assert new in expr and f" or " in expr, expr
                assert "vllm:num_preemptions{" not in expr, "the counter is _total"


def test_queries_use_the_rules_objective_names():
    """Recording rules the alerts use are defined; no dashboard depends on them (a dashboard
    must work without our rules installed)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    used = set()
    for a in alerts():
        used |= set(re.findall(r"[a-z_]+:[a-z_:]+:[a-z0-9_]+", a["expr"]))
    assert used <= recorded, used - recorded
    for path in (REPO / "dashboards").glob("*.json"):
        for r in recorded:
            assert r not in path.read_text(), (path, r)


def test_rules_file_is_plain_prometheus(tmp_path: Path):
    """The same file loads as a PrometheusRule's spec: no top-level key but groups."""
    doc = yaml.safe_load(RULES.read_text())
    assert list(doc) == ["groups"]
