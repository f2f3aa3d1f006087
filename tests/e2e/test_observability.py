"""End-to-end: the dashboards and alerts run on a real Prometheus scraping the e2e stack.

A Prometheus (cmd/prometheus, built from the module version hack/versions.env pins, as promtool
is) scrapes, on loopback:

- the simulated vLLM fleet, discovered with kubernetes_sd from the real kube-apiserver and
  relabelled the way the shipped fleet PodMonitor does (the operator's standard target labels,
  then deploy/components/prometheus/podmonitor-fleet.yaml's own relabelings, read from that
  file), so `workload` is the Deployment;
- the fake dcgm-exporters (honor_labels: false, as most installs: the GPU's pod lands in
  exported_pod / exported_namespace);
- the adapter's own /metrics over HTTPS, verified against its CA, with a ServiceAccount token:
  refused (403, up == 0) until components/prometheus/metrics-rbac.yaml binds the base's
  ClusterRole to that ServiceAccount, scraped after;
- the kube-apiserver (aggregator_unavailable_apiservice);
- a kube-state-metrics stand-in for the HPA family (ksm_standin.py: the real one cannot be
  built here), rendered from the real HPA objects.

It loads alerts/inferscale.rules.yaml. Then, against a loaded fleet with an HPA at its maximum
and one replica whose /metrics failed for a while:
- every panel query of every dashboard (Grafana variables filled in) returns data, and every
  template variable query lists values;
- every rule expression evaluates, and each of its signals (the operands it compares or
  combines; see promql.py) returns data;
- every metric name the dashboards and rules use is one Prometheus scraped here, one a real
  exporter's capture in ../shared/fixtures shows (vLLM V0 names), or -- reported separately --
  an old vLLM name no capture shows that ../shared/fixtures/METRICS-REFERENCE.md (compiled
  from vLLM's released sources) lists.

The warm-pool controller runs here too (``scaler run`` on the host, as test_warm_pool starts it,
with one WarmPool over the fleet and the HPA reading its recommendation), scraped with the job
label deploy/components/prometheus/podmonitor-warm-pool.yaml gives it, so the Warm pool
dashboard and the warm-pool rules are checked like the others. Its reconcile-error counter
exists only after a failed reconcile: the test provokes one by taking the status write away
from its ClusterRole for a moment. Its sleep-mode call counter exists only after a sleep or
wake call: the pool has a sleeping tier and the fleet vLLM's sleep mode, and before the load
starts one replica goes through a real sleep cycle (the controller's POST /sleep and POST
/wake_up to its simulator; see sleep_and_wake_one_replica).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from .cluster import ADAPTER_NAMESPACE, DCGM_PORT, REPO, Cluster, free_port
from .ksm_standin import KsmStandIn
from .load import ClosedLoopLoad, get_text, metrics_down, metrics_up
from .pki import ADAPTER_SERVICE_DNS
from .procs import log
from .promql import metric_names, signals, to_promql
from .kube import KubeError
from .test_warm_pool import (COMPONENT, SERVING_LABEL, SIM_WORK_MODEL, SLEEP_SINCE, SLEEP_STATE,
                             WARMPOOLS, Scalers, _crd_established, apply, sleep_state, warm_pool)

NS = "obs"
WORKLOAD = "vllm-obs"
MODEL = "qwen2.5-7b"
SCRAPE_INTERVAL = "1s"
# What Grafana's $__rate_interval would be here: max(4 x scrape interval, interval + scrape).
RATE_INTERVAL = "15s"
PROMETHEUS_SA = ("monitoring", "prometheus-k8s")  # components/prometheus/metrics-rbac.yaml
# The job label prometheus-operator gives a PodMonitor's targets: <namespace>/<name>.
FLEET_JOB = "inferscale-system/inferscale-fleet"
RULES = REPO / "alerts/inferscale.rules.yaml"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
WARM_POOL_PREFIX = "inferscale_warmpool_"
# The job the shipped PodMonitor of the controller gives its targets: <namespace>/<name>.
WARM_POOL_PODMONITOR = REPO / "deploy/components/prometheus/podmonitor-warm-pool.yaml"
WARM_POOL_JOB = "{namespace}/{name}".format(
    **yaml.safe_load(WARM_POOL_PODMONITOR.read_text())["metadata"])
SCALER = "scaler-obs"
# Series that exist only once something went wrong, which nothing in this run provokes: the
# adapter answered no 5xx. Their selectors are still checked to be valid and the metric to be
# scraped; only "returns data" is waived, and only for these.
# (Both spellings: the name before the braces, as written, or as __name__ inside them after the
# other matchers, as promql.to_promql prints an operand of a rule.)
ERROR_ONLY = [re.compile(r'inferscale_adapter_requests_total"?[,{][^}]*code=~"5\.\."'),
              re.compile(r'\{[^}]*code=~"5\.\."[^}]*__name__="inferscale_adapter_requests_total"')]
SHARED = Path(os.environ.get("INFERSCALE_SHARED", REPO.parent / "shared"))


# --- Prometheus -------------------------------------------------------------------------------

def operator_relabelings(path: Path) -> list[dict]:
    """The relabelings of a shipped PodMonitor, in Prometheus' own syntax."""
    doc = yaml.safe_load(path.read_text())
    out = []
    for r in doc["spec"]["podMetricsEndpoints"][0].get("relabelings", []):
        out.append({re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v
                    for k, v in r.items()})
    return out


def prometheus_config(c: Cluster, token_file: Path, ksm_port: int, scaler_port: int) -> dict:
    p = c.pki
    kubeconfig = c.kubeconfigs["admin"]
    fleet_podmonitor = REPO / "deploy/components/prometheus/podmonitor-fleet.yaml"
    pm = yaml.safe_load(fleet_podmonitor.read_text())
    port_name = pm["spec"]["podMetricsEndpoints"][0]["port"]
    # What prometheus-operator generates for a PodMonitor before the user's relabelings.
    operator_standard = [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_label_inferscale_dev_scrape"],
         "regex": "true"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
         "regex": "(Failed|Succeeded)"},
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": port_name},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": FLEET_JOB},
        {"target_label": "endpoint", "replacement": port_name},
    ]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "scrape_timeout": "900ms"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "fleet",
             "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": kubeconfig}],
             "relabel_configs": operator_standard + operator_relabelings(fleet_podmonitor)},
            {"job_name": "dcgm-exporter", "honor_labels": False,
             "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": kubeconfig}],
             "relabel_configs": [
                 {"action": "keep", "source_labels": ["__meta_kubernetes_pod_label_app"],
                  "regex": "nvidia-dcgm-exporter"},
                 {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                  "regex": str(DCGM_PORT)},
                 {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                 {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                 {"source_labels": ["__meta_kubernetes_pod_container_name"],
                  "target_label": "container"}]},
            # What the shipped ServiceMonitor makes of the adapter: HTTPS verified against the
            # adapter's CA for its Service name, Prometheus' ServiceAccount token, and
            # job/namespace/pod labels.
            {"job_name": "inferscale-adapter", "scheme": "https",
             "tls_config": {"ca_file": p.adapter_ca.cert, "server_name": ADAPTER_SERVICE_DNS},
             "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
             "static_configs": [{"targets": [f"127.0.0.1:{c.ports['adapter']}"],
                                 "labels": {"namespace": ADAPTER_NAMESPACE,
                                            "pod": "inferscale-adapter-0"}}]},
            {"job_name": "apiserver", "scheme": "https",
             "tls_config": {"ca_file": p.ca.cert, "cert_file": p.admin.cert,
                            "key_file": p.admin.key},
             "static_configs": [{"targets": [f"127.0.0.1:{c.ports['apiserver']}"]}]},
            {"job_name": "kube-state-metrics", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"]}]},
            # The warm-pool controller's plain-HTTP /metrics, with the labels
            # podmonitor-warm-pool.yaml gives a pod of deploy/components/warm-pool.
            {"job_name": "inferscale-scaler",
             "static_configs": [{"targets": [f"127.0.0.1:{scaler_port}"],
                                 "labels": {"job": WARM_POOL_JOB,
                                            "namespace": ADAPTER_NAMESPACE,
                                            "pod": "inferscale-scaler-0"}}]},
        ],
    }


def cached_bin(name: str) -> str:
    """A binary of hack/build-binaries.sh (built if missing; hack/e2e-test.sh builds it first)."""
    r = subprocess.run(["bash", str(REPO / "hack/build-binaries.sh"), name],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return subprocess.run(["bash", str(REPO / "hack/bin-path.sh"), name], capture_output=True,
                          text=True, check=True).stdout.strip()


class Prometheus:
    def __init__(self, c: Cluster, config: dict, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        bin_ = cached_bin("prometheus")
        self.proc = c.procs.start("prometheus", [
            bin_, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            "--storage.tsdb.retention.time=2h"])
        self.c = c

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=30) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def ast(self, expr: str) -> dict:
        return self.api("parse_query", query=expr)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def targets(self, job: str) -> list[dict]:
        return [t for t in self.api("targets", state="active")["activeTargets"]
                if t["labels"].get("job") == job or t.get("scrapePool") == job]


def request_token(c: Cluster, namespace: str, name: str) -> str:
    c.create_namespace(namespace)
    c.api.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": name, "namespace": namespace}})
    r = c.api.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 3600}}, ok=(200, 201))
    return r["status"]["token"]


# --- the stack under observation ----------------------------------------------------------------

@pytest.fixture(scope="module")
def observed(cluster: Cluster):
    c = cluster
    work = c.workdir / "observability"
    work.mkdir(exist_ok=True)
    token_file = work / "prometheus.token"
    token_file.write_text(request_token(c, *PROMETHEUS_SA))
    ksm = KsmStandIn(lambda: c.api.get(
        "/apis/autoscaling/v2/horizontalpodautoscalers")["items"]).start()
    # The warm-pool controller, as deploy/components/warm-pool installs it (CRD, placeholder
    # PriorityClass, RBAC), on the host as its service account.
    for f in ("crd.yaml", "priorityclass.yaml", "rbac.yaml"):
        c.kubectl("apply", "--server-side", "-f", str(COMPONENT / f))
    c.wait_for(lambda: _crd_established(c), "the WarmPool CRD to be Established", timeout=30)
    scalers = Scalers(c)
    scalers.start(SCALER)
    _STACK["scalers"] = scalers
    prom = Prometheus(c, prometheus_config(c, token_file, ksm.port,
                                           scalers.metrics_ports[SCALER]),
                      work / "prometheus")
    try:
        c.wait_for(prom.ready, "Prometheus /-/ready", timeout=60)
        # Two replicas and an HPA held at its maximum (2): the HPA panels and the
        # maxed-out alert's HPA side have something to show. The HPA also reads the warm
        # pool's recommendation (the Warm pool dashboard's HPA line).
        # vLLM's sleep mode on (the simulator wakes in 1 s), for the sleep cycle below.
        c.create_deployment(NS, WORKLOAD, replicas=2, model=MODEL, max_num_seqs=2,
                            ttft="150ms", itl="10ms", sim_args=["--enable-sleep-mode"])
        hpa = c.create_hpa(NS, "vllm-obs", WORKLOAD, "vllm_num_requests_waiting", "4",
                           min_replicas=2, max_replicas=2)
        hpa["spec"]["metrics"].append({"type": "Object", "object": {
            "describedObject": {"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": WORKLOAD},
            "metric": {"name": "inferscale_recommended_replicas"},
            "target": {"type": "AverageValue", "averageValue": "1"}}})
        c.api.apply({"apiVersion": hpa["apiVersion"], "kind": hpa["kind"],
                     "metadata": {"name": "vllm-obs", "namespace": NS}, "spec": hpa["spec"]})
        # A short prior cold start: its forecasts fall due (forecast error) within seconds.
        # A sleeping tier: the controller puts replicas to sleep and wakes them.
        apply(c, warm_pool(NS, WORKLOAD, WORKLOAD, workModel=SIM_WORK_MODEL,
                           bounds={"minReplicas": 1, "maxReplicas": 2},
                           forecast={"priorTimeToReadySeconds": 3},
                           tiers={"sleeping": {"maxReplicas": 1}}))
        c.wait_for(lambda: len(c.ready_pod_ips(NS, f"app.kubernetes.io/name={WORKLOAD}")) == 2,
                   "two Ready replicas", timeout=90)
        sleep_and_wake_one_replica(c, scalers.metrics_ports[SCALER])
        load = ClosedLoopLoad(lambda: [f"{ip}:8000" for ip in
                                       c.ready_pod_ips(NS, f"app.kubernetes.io/name={WORKLOAD}")],
                              model=MODEL, concurrency=6)
        load.start()
        yield c, prom, load
    finally:
        if "load" in locals():
            load.stop()
        c.procs.stop(prom.proc)
        ksm.stop()
        # The pool goes while its controller runs, so its finalizer is done here and no
        # later test's controller finds it.
        pool = f"{WARMPOOLS}/namespaces/{NS}/warmpools/{WORKLOAD}"
        c.api.delete(pool)
        try:
            c.wait_for(lambda: not _exists(c, pool), "the WarmPool deleted", timeout=20)
        finally:
            scalers.stop_all()


def sleep_and_wake_one_replica(c: Cluster, scaler_port: int) -> None:
    """A real sleep cycle of one replica, for the Sleep-mode calls panel, in ~10 s instead of
    the decision's (its one-minute warm-up, then a fall of load: test_warm_pool c, ~100 s).
    The test makes the two moves the decision would: it marks an idle replica draining (the
    marks the controller's own drain writes), the controller puts it to sleep (POST /sleep to
    its simulator); then it marks it waking, unless the controller woke it already, and the
    controller wakes it (POST /wake_up, then GET /is_sleeping) and returns it to the Service.
    Before the load starts, so no request meets a sleeping replica."""
    pod = c.pods(NS, f"app.kubernetes.io/name={WORKLOAD}")[0]
    name = pod["metadata"]["name"]
    path = f"/api/v1/namespaces/{NS}/pods/{name}"
    addr = c.wait_for(lambda: c.fleet.sim_address(NS, name), f"the simulator of {name}")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.api.request("PATCH", path, {"metadata": {
        "labels": {SERVING_LABEL: "false"},
        "annotations": {SLEEP_STATE: "draining", SLEEP_SINCE: since}}},
        content_type="application/merge-patch+json")
    c.wait_for(lambda: sleep_state(c.api.get(path)) != "draining",
               f"the controller to put {name} to sleep", timeout=30, interval=0.5)
    assert sleep_state(c.api.get(path)) in ("asleep", "waking", None), c.api.get(path)
    key = "/metadata/annotations/" + SLEEP_STATE.replace("~", "~0").replace("/", "~1")
    try:
        c.api.request("PATCH", path, [{"op": "test", "path": key, "value": "asleep"},
                                      {"op": "replace", "path": key, "value": "waking"}],
                      content_type="application/json-patch+json")
    except KubeError:
        # The test op failed: the controller is waking it (or woke it) on its own.
        assert sleep_state(c.api.get(path)) in ("waking", None), c.api.get(path)
    c.wait_for(lambda: sleep_state(c.api.get(path)) is None
               and c.api.get(path)["metadata"]["labels"].get(SERVING_LABEL) == "true",
               f"the controller to wake {name}", timeout=30, interval=0.5)
    status, body = get_text(addr, "/is_sleeping")
    assert status == 200 and json.loads(body)["is_sleeping"] is False, body
    with urllib.request.urlopen(f"http://127.0.0.1:{scaler_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    for call in ("sleep", "wake_up"):
        assert re.search(r'^inferscale_warmpool_engine_calls_total\{call="%s",'
                         r'result="success"\} [1-9]' % call, metrics, re.M), metrics
    log(f"observability: {name} put to sleep and woken by the controller")


def _exists(c: Cluster, path: str) -> bool:
    try:
        c.api.get(path)
    except KubeError as e:
        if e.status == 404:
            return False
        raise
    return True


def test_prometheus_needs_the_shipped_rbac_to_scrape_the_adapter(observed):
    """The adapter authorizes /metrics like any request: Prometheus' token alone gets 403;
    components/prometheus/metrics-rbac.yaml (binding base/rbac.yaml's ClusterRole
    inferscale-adapter-metrics) lets it in."""
    c, prom, _ = observed

    def adapter_target():
        targets = prom.targets("inferscale-adapter")
        return targets[0] if targets and targets[0]["health"] != "unknown" else None

    t = c.wait_for(adapter_target, "a first scrape of the adapter", timeout=30)
    assert t["health"] == "down" and "403" in t["lastError"], t
    c.kubectl("apply", "-f", str(REPO / "deploy/components/prometheus/metrics-rbac.yaml"))
    c.wait_for(lambda: (adapter_target() or {}).get("health") == "up",
               "Prometheus scraping the adapter once bound", timeout=60)


_DATA_READY: dict[str, bool] = {}
# The controller under observation (its own /metrics, read directly).
_STACK: dict[str, Scalers] = {}


def provoke_reconcile_error(c: Cluster, prom: Prometheus) -> None:
    """A failed reconcile, the way a broken install fails: the controller's ClusterRole
    without the WarmPool status write until a sync's status patch is refused (403), then
    deploy/components/warm-pool/rbac.yaml again as shipped."""
    docs = [d for d in yaml.safe_load_all((COMPONENT / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "inferscale-scaler")
    shipped = len(role["rules"])
    role["rules"] = [r for r in role["rules"] if "warmpools/status" not in r["resources"]]
    assert len(role["rules"]) == shipped - 1, "the shipped ClusterRole grants the status write"
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
              input=yaml.safe_dump(role))
    try:
        c.wait_for(lambda: prom.query("inferscale_warmpool_reconcile_errors_total"),
                   "a failed reconcile counted by the controller", timeout=60)
    finally:
        c.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                  str(COMPONENT / "rbac.yaml"))


def wait_for_data(c: Cluster, prom: Prometheus, load: ClosedLoopLoad) -> None:
    """Everything the queries need: scrapes of every job, rates over requests, a failed scrape
    of one replica, and two whole minutes of data for the rules' [10m:1m] subqueries. Once per
    module (the tests share the stack)."""
    if _DATA_READY.get("done"):
        return
    c.kubectl("apply", "-f", str(REPO / "deploy/components/prometheus/metrics-rbac.yaml"))
    c.wait_for(lambda: prom.query('up{job="inferscale-adapter"} == 1'),
               "the adapter scraped", timeout=60)
    for job in (FLEET_JOB, "dcgm-exporter", "apiserver", "kube-state-metrics", WARM_POOL_JOB):
        c.wait_for(lambda: prom.query(f'up{{job="{job}"}} == 1'), f"job {job} up", timeout=60)
    c.wait_for(lambda: prom.query(f'vllm:num_requests_running{{namespace="{NS}"}}'),
               "the fleet's series", timeout=60)
    first_data = time.time()
    # One replica's /metrics fails for a few scrapes: the adapter counts failures by reason.
    pod = c.pods(NS, f"app.kubernetes.io/name={WORKLOAD}")[0]["metadata"]["name"]
    addr = c.wait_for(lambda: c.fleet.sim_address(NS, pod), f"the simulator of {pod}")
    metrics_down(addr)
    try:
        c.wait_for(lambda: prom.query('inferscale_adapter_scrapes_total{result!="success"}'),
                   "a failed scrape counted by the adapter", timeout=30)
    finally:
        metrics_up(addr)
    provoke_reconcile_error(c, prom)
    # [10m:1m] subqueries evaluate at whole minutes: two of them must hold fleet data.
    deadline = (int(first_data) // 60 + 2) * 60 + 3
    log(f"observability: waiting {max(0.0, deadline - time.time()):.0f}s for two whole "
        f"minutes of data")
    while time.time() < deadline:
        c.check_components()
        time.sleep(2)
    assert load.rate(30) > 0, "the load generator is sending requests"
    _DATA_READY["done"] = True


def fill_variables(expr: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr


def dashboard_values(d: dict) -> dict[str, str]:
    """Grafana variables for a dashboard: our namespace (or the adapter's), "All" elsewhere."""
    ns = NS if d["uid"] == "inferscale-fleet" else (
        ADAPTER_NAMESPACE if d["uid"] == "inferscale-adapter" else ".*")
    values = {"__rate_interval": RATE_INTERVAL, "namespace": ns}
    for v in d["templating"]["list"][1:]:
        values.setdefault(v["name"], ".*")
    return values


def test_every_dashboard_query_returns_data(observed):
    c, prom, load = observed
    wait_for_data(c, prom, load)
    empty = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        values = dashboard_values(d)
        for v in d["templating"]["list"][1:]:
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["definition"])
            assert m, v["definition"]
            selector, label = fill_variables(m.group(1), values), m.group(2)
            series = prom.api("series", **{"match[]": selector})
            if not [s for s in series if s.get(label)]:
                empty.append(f"{path.name} variable {v['name']}: {selector}")
        for p in d["panels"]:
            for t in p.get("targets", []):
                expr = fill_variables(t["expr"], values)
                if prom.query(expr):
                    continue
                if not any(r.search(expr) for r in ERROR_ONLY):
                    empty.append(f"{path.name} / {p['title']}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_every_rule_expression_and_its_signals_return_data(observed):
    c, prom, load = observed
    wait_for_data(c, prom, load)
    failures = []
    for rule in rules():
        name = rule.get("alert") or rule.get("record")
        prom.query(rule["expr"])  # evaluates without error (an error fails the request)
        if "record" in rule:
            # A recording rule's own output exists (Prometheus evaluated the loaded file).
            if not prom.query(rule["record"]):
                failures.append(f"{name}: no recorded series")
            continue
        for node in signals(prom.ast(rule["expr"])):
            expr = to_promql(node)
            if not prom.query(expr) and not any(r.search(expr) for r in ERROR_ONLY):
                failures.append(f"{name}: {expr}")
    assert not failures, "signals without data:\n" + "\n".join(failures)


def fixture_metric_names() -> set[str]:
    """Metric names in the real exporters' captures (../shared/fixtures), with the series
    names a histogram or counter family exposes."""
    if not (SHARED / "fixtures").exists():
        # The repository's convention (metrics/tests/support/mod.rs): fail, unless
        # INFERSCALE_ALLOW_SKIP=1 says skipping is intended (then say SKIPPED).
        if os.environ.get("INFERSCALE_ALLOW_SKIP") == "1":
            pytest.skip(f"SKIPPED: {SHARED}/fixtures is missing; INFERSCALE_ALLOW_SKIP=1")
        pytest.fail(f"{SHARED}/fixtures is missing (set INFERSCALE_SHARED, or "
                    "INFERSCALE_ALLOW_SKIP=1 to skip): the V0 names are checked against it")
    names = set()
    for f in SHARED.glob("fixtures/**/*.txt"):
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
            if m and not line.startswith("#"):
                names.add(m.group(1))
    return names


def test_every_metric_name_exists_where_it_is_claimed(observed):
    """Every metric name of dashboards/ and alerts/ is one Prometheus scraped from the fleet,
    the dcgm fakes, the adapter, the kube-apiserver or the stand-in, or one a real exporter
    capture shows (old vLLM names the fleet's simulator, like vLLM >= 0.12, no longer
    exposes). Recording rules' names count as defined."""
    c, prom, load = observed
    wait_for_data(c, prom, load)
    scraped = set(prom.api("label/__name__/values"))
    captured = fixture_metric_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    exprs = [r["expr"] for r in rules()]
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        values = dashboard_values(d)
        exprs += [fill_variables(t["expr"], values) for p in d["panels"] for t in p.get("targets", [])]
        exprs += [fill_variables(re.fullmatch(r"label_values\((.*), \w+\)", v["definition"]).group(1), values)
                  for v in d["templating"]["list"][1:]]
    used: set[str] = set()
    for e in exprs:
        used |= metric_names(prom.ast(e))
    # Names real vLLM releases exposed that no capture here shows: only accepted when the
    # reference compiled from vLLM's released sources lists them (and reported).
    reference = (SHARED / "fixtures/METRICS-REFERENCE.md").read_text()
    documented = {n for n in used if n.startswith("vllm:") and
                  (n in reference or re.sub(r"_(bucket|count|sum)$", "", n) in reference)}
    unknown = sorted(used - scraped - captured - recorded - documented)
    assert not unknown, f"metric names nobody exposes: {unknown}"
    only_in_captures = sorted(used & captured - scraped)
    log(f"names only in real captures (older vLLM): {only_in_captures}")
    assert only_in_captures, "the V0 fallbacks are checked against captures"
    only_documented = sorted(used & documented - scraped - captured)
    log(f"names in no capture, only in METRICS-REFERENCE.md (vLLM's sources): {only_documented}")
    ksm = sorted(n for n in used if n.startswith("kube_horizontalpodautoscaler_"))
    log(f"names from the kube-state-metrics stand-in (not a real exporter): {ksm}")
    warm = sorted(n for n in used if n.startswith(WARM_POOL_PREFIX))
    log(f"warm-pool names scraped: {sorted(set(warm) & scraped)}")
    assert set(warm) <= scraped, warm
