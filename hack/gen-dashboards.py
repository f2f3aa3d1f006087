#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (and dashboards/README.md, the table of their
panels and queries) from the definitions below.

    hack/gen-dashboards.py           write them
    hack/gen-dashboards.py --check   fail if a committed file differs from what this writes

Conventions every dashboard follows (each one a lesson from a broken dashboard elsewhere):
- schemaVersion 39, a stable `uid`, the `${datasource}` variable on every panel and target
  (never a hard-coded datasource uid);
- chained variables namespace -> workload -> model (multi-select, "All" = `.*`, every matcher
  `=~`, so "All" never breaks a panel);
- percentiles from vLLM's histograms as
  `histogram_quantile(q, sum by (le, ...) (rate(..._bucket[$__rate_interval])))`;
- vLLM V0 and V1 both work: where a metric was renamed the query takes the new name and falls
  back to the old one per pod (`new or old`), never the removed name alone;
- ratios divide by `(den > 0)`: no traffic is no data, not a division by zero.

Labels the queries expect are documented in deploy/README.md ("Prometheus"): namespace, pod and
workload on vLLM series (the fleet PodMonitor adds workload), job="inferscale-adapter" on the
adapter's. dcgm-exporter's pod labels are read from `pod`/`namespace` or, when Prometheus renamed
them (honorLabels: false), from `exported_pod`/`exported_namespace`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

# --- query building blocks ------------------------------------------------------------------

FLEET = 'namespace=~"$namespace", workload=~"$workload", model_name=~"$model"'
FLEET_NO_MODEL = 'namespace=~"$namespace", workload=~"$workload"'
ADAPTER = 'job="inferscale-adapter", namespace=~"$namespace", pod=~"$pod"'
RATE = "$__rate_interval"


def hist_quantile(q: float, bucket_expr: str, by: str) -> str:
    """histogram_quantile over a rate of buckets, summed by le and `by`."""
    return f"histogram_quantile({q}, sum by (le, {by}) ({bucket_expr}))"


def rate(metric: str, sel: str) -> str:
    return f"rate({metric}{{{sel}}}[{RATE}])"


def renamed(new: str, old: str, sel: str, wrap=lambda m, s: f"{m}{{{s}}}") -> str:
    """The V1 name, or per pod the V0 name where only that one exists."""
    return f"{wrap(new, sel)} or {wrap(old, sel)}"


def dcgm(metric: str) -> str:
    """A dcgm-exporter metric with the pod that holds the GPU in `pod`/`namespace`, whether
    Prometheus kept dcgm's labels (honorLabels: true) or renamed them (exported_*)."""
    return (f'label_replace(label_replace({metric}, "pod", "$1", "exported_pod", "(.+)"), '
            f'"namespace", "$1", "exported_namespace", "(.+)")')


def on_fleet_pods(expr: str) -> str:
    """Keeps the series of pods of the selected workloads and adds their `workload` label."""
    return (f"{expr} * on (namespace, pod) group_left (workload) "
            f"group by (namespace, pod, workload) (vllm:num_requests_running{{{FLEET}}})")


def hpa(metric: str) -> str:
    """A kube-state-metrics HPA series, labelled with the workload the HPA scales."""
    return (f'max by (namespace, workload) (label_replace('
            f'{metric}{{job="kube-state-metrics", namespace=~"$namespace"}} '
            f'* on (namespace, horizontalpodautoscaler) group_left (scaletargetref_name) '
            f'kube_horizontalpodautoscaler_info{{job="kube-state-metrics", '
            f'namespace=~"$namespace", scaletargetref_name=~"$workload"}}, '
            f'"workload", "$1", "scaletargetref_name", "(.+)"))')


# --- dashboard model ------------------------------------------------------------------------

@dataclass
class Target:
    expr: str
    legend: str


@dataclass
class Panel:
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    min: float | None = 0
    max: float | None = None


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Variable:
    name: str
    label: str
    query: str  # label_values(...)


@dataclass
class Dashboard:
    file: str
    uid: str
    title: str
    description: str
    tags: list[str]
    variables: list[Variable]
    rows: list[Row]


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit, "color": {"mode": "palette-classic"}}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    steps = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in p.thresholds]
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    options: dict
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if p.stack else 0,
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if p.thresholds else "off"},
        }
        options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                              "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif p.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                   "orientation": "auto", "textMode": "auto"}
    else:
        raise ValueError(p.kind)
    return {
        "datasource": DS,
        "description": p.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "id": pid,
        "options": options,
        "targets": [{"datasource": DS, "editorMode": "code", "expr": t.expr,
                     "legendFormat": t.legend, "range": True, "refId": chr(ord("A") + i)}
                    for i, t in enumerate(p.targets)],
        "title": p.title,
        "type": p.kind,
    }


def variable_json(v: Variable) -> dict:
    return {
        "allValue": ".*", "current": {}, "datasource": DS, "definition": v.query,
        "hide": 0, "includeAll": True, "label": v.label, "multi": True, "name": v.name,
        "options": [],
        "query": {"qryType": 1, "query": v.query,
                  "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        # 2 = on time range change: the lists follow what exists now.
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1, "type": "query",
    }


def dashboard_json(d: Dashboard) -> dict:
    panels = []
    pid = 1
    y = 0
    for row in d.rows:
        panels.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                       "id": pid, "panels": [], "title": row.title, "type": "row"})
        pid += 1
        y += 1
        x = 0
        row_height = 0
        for p in row.panels:
            if x + p.width > 24:
                x, y = 0, y + row_height
                row_height = 0
            panels.append(panel_json(p, pid, x, y))
            pid += 1
            x += p.width
            row_height = max(row_height, p.height)
        y += row_height
    datasource_var = {
        "current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
        "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
        "skipUrlSync": False, "type": "datasource",
    }
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": d.description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": True, "icon": "external link", "includeVars": True,
                   "keepTime": True, "tags": ["inferscale"], "targetBlank": False,
                   "title": "inferscale", "type": "dashboards"}],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": d.tags,
        "templating": {"list": [datasource_var, *[variable_json(v) for v in d.variables]]},
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": d.title,
        "uid": d.uid,
        "version": 1,
        "weekStart": "",
    }


# --- the dashboards -------------------------------------------------------------------------

FLEET_VARS = [
    Variable("namespace", "Namespace", "label_values(vllm:num_requests_running, namespace)"),
    Variable("workload", "Workload",
             'label_values(vllm:num_requests_running{namespace=~"$namespace"}, workload)'),
    Variable("model", "Model", 'label_values(vllm:num_requests_running{namespace=~"$namespace", '
                               'workload=~"$workload"}, model_name)'),
]

BY = "namespace, workload"


def latency_panel(title: str, description: str, bucket: str) -> Panel:
    return Panel(title, description, unit="s", targets=[
        Target(hist_quantile(q, bucket, BY), f"{{{{workload}}}} p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)])


fleet = Dashboard(
    file="inferscale-fleet.json", uid="inferscale-fleet", title="inferscale / Fleet",
    description="vLLM workloads as the autoscaler sees them: load, latency percentiles, "
                "throughput, KV cache, GPUs and HPA decisions, per workload.",
    tags=["inferscale", "vllm", "autoscaling"],
    variables=FLEET_VARS,
    rows=[
        Row("Load and replicas", [
            Panel("Requests waiting", "Requests queued in the engines (vllm:num_requests_waiting), "
                  "summed per workload: the queue an HPA on vllm_num_requests_waiting sees.",
                  [Target(f"sum by ({BY}) (vllm:num_requests_waiting{{{FLEET}}})",
                          "{{workload}}")], width=8),
            Panel("Requests running", "Requests in the engines' running batches "
                  "(vllm:num_requests_running), summed per workload.",
                  [Target(f"sum by ({BY}) (vllm:num_requests_running{{{FLEET}}})",
                          "{{workload}}")], width=8),
            Panel("Replicas: HPA and scraped", "HPA desired, current and maximum replicas "
                  "(kube-state-metrics) against the replicas Prometheus scrapes.",
                  [Target(hpa("kube_horizontalpodautoscaler_status_desired_replicas"),
                          "{{workload}} desired"),
                   Target(hpa("kube_horizontalpodautoscaler_status_current_replicas"),
                          "{{workload}} current"),
                   Target(hpa("kube_horizontalpodautoscaler_spec_max_replicas"),
                          "{{workload}} max"),
                   Target(f"count by ({BY}) (vllm:num_requests_running{{{FLEET}}})",
                          "{{workload}} scraped")], width=8),
        ]),
        Row("Latency", [
            latency_panel("Time to first token", "TTFT p50/p95/p99 per workload from "
                          "vllm:time_to_first_token_seconds (merged histograms, so a fleet "
                          "percentile, not an average of per-pod percentiles).",
                          rate("vllm:time_to_first_token_seconds_bucket", FLEET)),
            latency_panel("Inter-token latency", "ITL p50/p95/p99 per workload: "
                          "vllm:inter_token_latency_seconds, or vllm:time_per_output_token_seconds "
                          "on engines that predate the rename (vLLM < 0.10.2).",
                          renamed("vllm:inter_token_latency_seconds_bucket",
                                  "vllm:time_per_output_token_seconds_bucket", FLEET,
                                  lambda m, s: f"rate({m}{{{s}}}[{RATE}])")),
            latency_panel("End-to-end request latency", "E2E p50/p95/p99 per workload from "
                          "vllm:e2e_request_latency_seconds.",
                          rate("vllm:e2e_request_latency_seconds_bucket", FLEET)),
            latency_panel("Queue time", "Time requests waited before their first scheduling, "
                          "p50/p95/p99 (vllm:request_queue_time_seconds, V1).",
                          rate("vllm:request_queue_time_seconds_bucket", FLEET)),
        ]),
        Row("Throughput", [
            Panel("Finished requests", "Requests finished per second by reason "
                  "(vllm:request_success_total).",
                  [Target(f"sum by ({BY}, finished_reason) "
                          f"({rate('vllm:request_success_total', FLEET)})",
                          "{{workload}} {{finished_reason}}")], unit="reqps", width=8),
            Panel("Tokens", "Prompt and generated tokens per second.",
                  [Target(f"sum by ({BY}) ({rate('vllm:prompt_tokens_total', FLEET)})",
                          "{{workload}} prompt"),
                   Target(f"sum by ({BY}) ({rate('vllm:generation_tokens_total', FLEET)})",
                          "{{workload}} generated")], unit="short", width=8),
            Panel("Preemptions", "Requests preempted per second (vllm:num_preemptions_total): "
                  "the KV cache could not hold the running batch.",
                  [Target(f"sum by ({BY}) ({rate('vllm:num_preemptions_total', FLEET)})",
                          "{{workload}}")], unit="short", width=8),
        ]),
        Row("KV cache and GPUs", [
            Panel("KV cache usage", "Share of the KV cache in use: the fullest replica and the "
                  "mean (vllm:kv_cache_usage_perc, or vllm:gpu_cache_usage_perc before 0.9.2).",
                  [Target(f"max by ({BY}) ({renamed('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc', FLEET)})",
                          "{{workload}} max"),
                   Target(f"avg by ({BY}) ({renamed('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc', FLEET)})",
                          "{{workload}} mean")],
                  unit="percentunit", max=1, thresholds=[(0.9, "orange"), (0.98, "red")],
                  width=8),
            Panel("GPU utilisation", "DCGM_FI_DEV_GPU_UTIL of the GPUs held by the workload's "
                  "pods (dcgm-exporter's pod labels joined to the vLLM pods), mean and max.",
                  [Target(f"avg by ({BY}) ({on_fleet_pods(dcgm('DCGM_FI_DEV_GPU_UTIL'))})",
                          "{{workload}} mean"),
                   Target(f"max by ({BY}) ({on_fleet_pods(dcgm('DCGM_FI_DEV_GPU_UTIL'))})",
                          "{{workload}} max")], unit="percent", max=100, width=8),
            Panel("GPU memory used", "Framebuffer memory used by the workload's GPUs "
                  "(DCGM_FI_DEV_FB_USED, MiB), summed.",
                  [Target(f"sum by ({BY}) ({on_fleet_pods(dcgm('DCGM_FI_DEV_FB_USED'))})",
                          "{{workload}}")], unit="decmbytes", width=8),
        ]),
    ],
)

adapter = Dashboard(
    file="inferscale-adapter.json", uid="inferscale-adapter", title="inferscale / Adapter",
    description="The inferscale metrics adapter: its scrapes of vLLM and dcgm-exporter pods, the "
                "freshness of what it serves, and the API the kube-apiserver calls.",
    tags=["inferscale", "autoscaling"],
    variables=[
        Variable("namespace", "Namespace",
                 'label_values(inferscale_adapter_targets{job="inferscale-adapter"}, namespace)'),
        Variable("pod", "Adapter pod", 'label_values(inferscale_adapter_targets'
                                       '{job="inferscale-adapter", namespace=~"$namespace"}, pod)'),
    ],
    rows=[
        Row("Availability", [
            Panel("Adapter replicas up", "Adapter pods Prometheus scrapes successfully (up).",
                  [Target('sum(up{job="inferscale-adapter", namespace=~"$namespace"})', "up")],
                  kind="stat", width=6, height=5),
            Panel("APIService unavailable", "The kube-apiserver's view of each metrics APIService "
                  "(aggregator_unavailable_apiservice; 1 = unavailable).",
                  [Target('max by (name) (aggregator_unavailable_apiservice'
                          '{name=~".*\\\\.(custom|external)\\\\.metrics\\\\.k8s\\\\.io"})',
                          "{{name}}")],
                  width=18, height=5, max=1, thresholds=[(1, "red")]),
        ]),
        Row("Scrapes", [
            Panel("Scrape success ratio by kind", "Successful scrapes over all scrapes, per target "
                  "kind (engine = vLLM and other inference engines, dcgm = dcgm-exporter).",
                  [Target(f'sum by (kind) ({rate("inferscale_adapter_scrapes_total", ADAPTER + ", result=" + chr(34) + "success" + chr(34))}) '
                          f'/ (sum by (kind) ({rate("inferscale_adapter_scrapes_total", ADAPTER)}) > 0)',
                          "{{kind}}")], unit="percentunit", max=1),
            Panel("Scrape failures by kind and reason", "Failed scrapes per second by target kind "
                  "and failure (connect_error, timeout, http_error, body_too_large, body_error, "
                  "no_known_metrics).",
                  [Target(f'sum by (kind, result) ({rate("inferscale_adapter_scrapes_total", ADAPTER + ", result!=" + chr(34) + "success" + chr(34))})',
                          "{{kind}} {{result}}")], unit="short", stack=True),
            Panel("Targets by state", "Scrape targets by kind and state (up, failing, pending).",
                  [Target(f"sum by (kind, state) (inferscale_adapter_targets{{{ADAPTER}}})",
                          "{{kind}} {{state}}")], stack=True),
            Panel("Oldest fresh scrape age", "Age of the oldest scrape still used in answers; "
                  "a pod whose last scrape is older than three intervals is left out (missing).",
                  [Target(f"max by (pod) (inferscale_adapter_oldest_fresh_scrape_age_seconds{{{ADAPTER}}})",
                          "{{pod}}")], unit="s"),
            Panel("Scrape duration p99 by kind", "Time to fetch and parse one target, p99.",
                  [Target(hist_quantile(0.99, rate("inferscale_adapter_scrape_duration_seconds_bucket", ADAPTER), "kind"),
                          "{{kind}} p99")], unit="s"),
            Panel("Malformed exposition lines", "Lines of scraped bodies skipped as malformed, "
                  "per second (inferscale_adapter_malformed_lines_total).",
                  [Target(f"sum by (pod) ({rate('inferscale_adapter_malformed_lines_total', ADAPTER)})",
                          "{{pod}}")], unit="short"),
        ]),
        Row("API", [
            Panel("Requests by route and code", "API requests per second by route and status "
                  "code (HPA polls, discovery, health probes, Prometheus).",
                  [Target(f"sum by (route, code) ({rate('inferscale_adapter_requests_total', ADAPTER)})",
                          "{{route}} {{code}}")], unit="reqps", stack=True),
            Panel("Latency by route", "API latency p50 and p99 by route.",
                  [Target(hist_quantile(0.5, rate("inferscale_adapter_request_duration_seconds_bucket", ADAPTER), "route"),
                          "{{route}} p50"),
                   Target(hist_quantile(0.99, rate("inferscale_adapter_request_duration_seconds_bucket", ADAPTER), "route"),
                          "{{route}} p99")], unit="s"),
            Panel("Error ratio", "Share of API requests answered 5xx.",
                  [Target(f'sum by (pod) ({rate("inferscale_adapter_requests_total", ADAPTER + ", code=~" + chr(34) + "5.." + chr(34))}) '
                          f'/ (sum by (pod) ({rate("inferscale_adapter_requests_total", ADAPTER)}) > 0)',
                          "{{pod}}")], unit="percentunit", max=1),
        ]),
    ],
)

# The controller's metrics are fleet-wide (summed over WarmPools, closed label sets); both
# replicas expose them, the leader's are current: gauges take the max over pods.
CTRL = 'namespace=~"$namespace", pod=~"$pod"'
ON_RECOMMENDATION = ('group by (namespace, horizontalpodautoscaler) '
                     '(kube_horizontalpodautoscaler_spec_target_metric{job="kube-state-metrics", '
                     'metric_name="inferscale_recommended_replicas"})')

warm_pool = Dashboard(
    file="inferscale-warm-pool.json", uid="inferscale-warm-pool", title="inferscale / Warm pool",
    description="The warm-pool controller (scaler run), over all WarmPools: what it recommends "
                "against what the HPAs that read the recommendation want and what serves, the "
                "capacity it keeps in each readiness tier, the time-to-ready it observes, how "
                "wrong its forecasts were, its decisions and errors.",
    tags=["inferscale", "autoscaling", "warm-pool"],
    variables=[
        Variable("namespace", "Namespace", "label_values(inferscale_warmpool_pools, namespace)"),
        Variable("pod", "Controller pod",
                 'label_values(inferscale_warmpool_pools{namespace=~"$namespace"}, pod)'),
    ],
    rows=[
        Row("Replicas, all WarmPools", [
            Panel("Recommendation, HPA and serving", "Replicas recommended (summed over "
                  "WarmPools; served to HPAs as inferscale_recommended_replicas), what the HPAs "
                  "that list that metric want (kube-state-metrics), and the pools' targets' "
                  "serving replicas.",
                  [Target(f"max(inferscale_warmpool_recommended_replicas{{{CTRL}}})",
                          "recommended"),
                   Target('sum(kube_horizontalpodautoscaler_status_desired_replicas'
                          '{job="kube-state-metrics"} * on (namespace, horizontalpodautoscaler) '
                          f'group_left () {ON_RECOMMENDATION})', "HPA desired"),
                   Target(f'max(inferscale_warmpool_capacity_replicas{{{CTRL}, tier="serving"}})',
                          "serving")], width=12),
            Panel("Capacity by tier", "The targets' replicas by tier: serving, pending (cold "
                  "starts), sleeping, waking, and the pools' placeholder pods.",
                  [Target(f"max by (tier) (inferscale_warmpool_capacity_replicas{{{CTRL}}})",
                          "{{tier}}")], stack=True, width=8),
            Panel("Pools and leader", "WarmPools reconciled, and controller replicas holding the "
                  "Lease (1 when healthy).",
                  [Target(f"max(inferscale_warmpool_pools{{{CTRL}}})", "pools"),
                   Target(f"sum(inferscale_warmpool_leader{{{CTRL}}})", "leaders")],
                  kind="stat", width=4),
        ]),
        Row("Forecast and time to ready", [
            Panel("Forecast error", "Relative error |forecast - actual| / actual of request-rate "
                  "forecasts once their horizon passed, p50 and p90.",
                  [Target(hist_quantile(q, rate("inferscale_warmpool_forecast_error_ratio_bucket", CTRL), "namespace"),
                          f"p{int(q * 100)}") for q in (0.5, 0.9)],
                  unit="percentunit", width=12),
            Panel("Time to ready by tier", "Observed time from creation (or wake call) to Ready "
                  "per tier (cold, placeholder, sleeping), p50 and p95.",
                  [Target(hist_quantile(q, rate("inferscale_warmpool_time_to_ready_seconds_bucket", CTRL), "tier"),
                          f"{{{{tier}}}} p{int(q * 100)}") for q in (0.5, 0.95)],
                  unit="s", width=12),
        ]),
        Row("Decisions and errors", [
            Panel("Decisions by action", "Decisions per second by action.",
                  [Target(f"sum by (action) ({rate('inferscale_warmpool_decisions_total', CTRL)})",
                          "{{action}}")], stack=True, width=8),
            Panel("Sleep-mode calls", "Calls to vLLM's sleep-mode endpoints by call and result.",
                  [Target(f"sum by (call, result) ({rate('inferscale_warmpool_engine_calls_total', CTRL)})",
                          "{{call}} {{result}}")], width=8),
            Panel("Reconcile errors by kind", "Failed reconciles per second, by what failed.",
                  [Target(f"sum by (kind) ({rate('inferscale_warmpool_reconcile_errors_total', CTRL)})",
                          "{{kind}}")], width=8),
        ]),
    ],
)

DASHBOARDS = [fleet, adapter, warm_pool]


# Said plainly in the README: what is proven on data for this dashboard, and what is not.
WARM_POOL_STATUS = (
    "**Data checked.** Every query of this dashboard reads the warm-pool "
    "controller's own metrics (`inferscale_warmpool_*`, served by `scaler run`) or HPAs that use "
    "its recommendation (`inferscale_recommended_replicas`, served by the adapter with "
    "`--warm-pools`). The e2e stack of `tests/e2e/test_observability.py` runs the controller "
    "with one WarmPool over its fleet and an HPA that reads the recommendation; its Prometheus "
    "scrapes the controller as the shipped PodMonitor on its `metrics` port does "
    "(`deploy/components/prometheus/podmonitor-warm-pool.yaml`, Helm "
    "`warmPool.podMonitor.enabled`), and every panel query and variable must return data there. "
    "The reconcile "
    "errors panel has data because the test takes the status write away from the controller's "
    "ClusterRole until a reconcile fails. The sleep-mode calls panel has data because the pool "
    "has a sleeping tier and, before the load starts, the test marks one idle replica draining, "
    "then waking unless the controller woke it already (the moves the decision makes only after "
    "its one-minute warm-up and a fall "
    "of load, as `tests/e2e/test_warm_pool.py` scenario c shows): the controller puts it to "
    "sleep and wakes it with real calls to the simulator's `/sleep` and `/wake_up`.")


def readme(dashboards: list[Dashboard]) -> str:
    lines = ["# Grafana dashboards", "",
             "Generated by `hack/gen-dashboards.py` (edit it, not the JSON; `--check` fails on "
             "drift). Import the JSON files in Grafana (≥ 10.4) or let the Helm chart install "
             "them as ConfigMaps labelled `grafana_dashboard: \"1\"` for Grafana's sidecar. "
             "Every panel query runs against a real Prometheus scraping the e2e stack in "
             "`tests/e2e/test_observability.py` and must return data.", ""]
    for d in dashboards:
        lines += [f"## {d.title} (`{d.file}`, uid `{d.uid}`)", "", d.description, ""]
        if d is warm_pool:
            lines += [WARM_POOL_STATUS, ""]
        lines += [
                  "Variables: " + ", ".join(f"`{v.name}` = `{v.query}`" for v in d.variables), "",
                  "| row | panel | what it shows | queries |", "|---|---|---|---|"]
        for row in d.rows:
            for p in row.panels:
                queries = "<br>".join(f"`{t.expr.replace('|', chr(92) + '|')}`" for t in p.targets)
                lines.append(f"| {row.title} | {p.title} | {p.description} | {queries} |")
        lines.append("")
    return "\n".join(lines)


def render() -> dict[Path, str]:
    files = {OUT / d.file: json.dumps(dashboard_json(d), indent=2) + "\n" for d in DASHBOARDS}
    files[OUT / "README.md"] = readme(DASHBOARDS)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if a file differs")
    args = ap.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run hack/gen-dashboards.py): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
