"""Freshness side by side: how soon each metrics path shows a load step, on one control plane.

One real control plane (the e2e harness: etcd, kube-apiserver with the aggregation layer,
kube-controller-manager with the HPA at its default 15 s sync, kube-scheduler, kwok), one fleet
of N fake vLLM pods (default 1,000) whose `/metrics` (the real vLLM 0.18 capture, moving) is
served by `vllm-sim fleet` on each pod's own address, and every path a user could put between
those pods and an HPA, each with its own HPA scaling its own consumer Deployment on the fleet's
total queue (`sum` of `vllm:num_requests_waiting`; target N per replica, so desiredReplicas =
waiting per pod):

  inferscale-5s / -1s  the adapter (5 s default scrape / 1 s), Object metric on the Deployment
  keda-prom15          Prometheus (15 s scrape, kubernetes_sd pod discovery) + KEDA's prometheus
                       scaler with KEDA's defaults (pollingInterval 30 s, no metric cache)
  keda-prom15-cached   the same with `useCachedMetrics: true` (the HPA then reads the value
                       KEDA's loop fetched on its last poll)
  keda-prom5           Prometheus at 5 s + KEDA polling every 5 s
  keda-metrics-api     KEDA's metrics-api scaler reading every pod's /metrics itself
                       (`format: prometheus`, `aggregateFromKubeServiceEndpoints`, `sum`)

With `--without-keda` (KEDA not built or not wanted) the KEDA paths are replaced by
Prometheus itself: `prom15` / `prom5` poll the same `sum(...)` query from Prometheus' HTTP API
every 100 ms. That is a lower bound for anything reading Prometheus (KEDA adds its polling
and the HPA's sync on top) and has no desiredReplicas of its own.

Load steps between 1 and 3 waiting requests per pod happen at known moments (the fleet's
admin endpoint answers when the next scrape will see the step). Every path's value is read
through the aggregator, as the HPA reads it, every 100 ms, and every HPA's desiredReplicas
every 100 ms; for each step and path: step -> the API shows the new total, step -> the HPA
wants the new replica count. HPA behaviour: scale-down stabilisation 0 s for every path (the
default 300 s would hide every down step the same way for all of them).

Phases: A (adapter at 5 s, Prometheus/KEDA paths), B (adapter at 1 s, the same KEDA paths
again), C (the metrics-api path alone: every read of it scrapes every pod, so it runs without
the others' pollers).

Runs in its own network namespace (`unshare -n`, loopback only): KEDA's metrics server binds
its /metrics port on every interface, and the namespace keeps that (and the fixed pod
addresses) off the machine's network; the same namespace lets it run beside e2e without the
e2e lock (its loopback addresses and ports are its own). `make compare` builds everything
first, then runs this. Bounded: fixed steps and a deadline per wait.

    make compare                              # 1,000 pods, 20 steps per phase
    python3 -m tests.perf.compare --pods 100 --steps 4 --spacing 30   # inside `unshare -n`
    make compare COMPARE_ARGS="--without-keda --pods 100 --steps 6"  # no KEDA build
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cluster import NODE_PREFIX, POD_PREFIX, SERVICE_PORT, Cluster, free_port
from tests.e2e.kube import KubeError, quantity
from tests.e2e.pki import make_ca, make_leaf
from tests.e2e.procs import log
from tests.perf import common

OUT_DIR = common.REPO / "docs/perf"
NS = "fleet"
LOW, HIGH = 1, 3
POLL_SECONDS = 0.1
HPA_SYNC_PERIOD = "15s"   # kube-controller-manager's default
PODS_PER_NODE = 200
KEDA_NS = "keda"


@dataclass
class PathSpec:
    name: str
    label: str
    hpa: str                       # the HPA whose desiredReplicas we watch ("": none)
    api_path: str = ""             # filled once the HPA (KEDA's) exists
    prom_query: str = ""           # read from Prometheus' HTTP API instead of api_path
    phases: tuple[str, ...] = ()


@dataclass
class Sample:
    sent: float
    received: float
    value: float | None
    error: str = ""


@dataclass
class PhaseRecord:
    name: str
    steps: list[tuple[float, int]] = field(default_factory=list)   # (Unix time, level)
    api: dict[str, list[Sample]] = field(default_factory=dict)
    hpa: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)            # cores over the phase
    load_before: str = ""
    load_after: str = ""


def fleet_pod_spec(command: list[str], port: int | None = None, fleet: str = NS) -> dict:
    """A pod for the fake nodes of the fleet created in namespace `fleet` (kwok runs it;
    nothing executes `command`)."""
    container = {"name": "main", "image": "none", "command": command}
    if port:
        container["ports"] = [{"name": "http", "containerPort": port}]
    return {"nodeSelector": {"inferscale.dev/fleet-node": fleet},
            "tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 0,
            "containers": [container]}


def running_pods(c: Cluster, namespace: str) -> list[dict]:
    pods = c.pods(namespace, "app=vllm")
    return [p for p in pods if p.get("status", {}).get("podIP")
            and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def create_kwok_fleet(c: Cluster, n: int, workdir: Path, namespace: str = NS,
                      first_node: int = 0) -> tuple[common.FleetProcs, list[dict]]:
    """A Deployment `vllm` of `n` scrape-labelled pods in `namespace` on fake nodes
    `fleet-node-<first_node>...` labelled for this namespace's pods only (kwok gives them IPs
    from each node's /24 of the run's loopback block), and `vllm-sim fleet` processes serving the real capture on every pod's
    address, then marks the pods Ready as a kubelet would once the readiness probe passes.
    Returns the fleet and the pods."""
    c.create_namespace(namespace)
    nodes = -(-n // PODS_PER_NODE) + 1
    for i in range(first_node, first_node + nodes):
        name = f"fleet-node-{i}"
        res = {"cpu": "256", "memory": "2Ti", "pods": str(PODS_PER_NODE + 50)}
        c.api.apply({"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                                  "labels": {"type": "kwok", "inferscale.dev/fleet-node": namespace,
                                             "kubernetes.io/hostname": name}},
                     "spec": {"podCIDR": f"{POD_PREFIX}.{100 + i}.0/24"}})
        c.api.apply_status({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                            "status": {"allocatable": res, "capacity": res,
                                       "addresses": [{"type": "InternalIP",
                                                      "address": f"{NODE_PREFIX}.1.{i + 1}"}]}})
    c.api.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "vllm", "namespace": namespace},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "vllm"}},
                 "template": {
                     "metadata": {"labels": {"app": "vllm", "inferscale.dev/scrape": "true"},
                                  "annotations": {"inferscale.dev/port": "8000",
                                                  "inferscale.dev/path": "/metrics"}},
                     "spec": fleet_pod_spec(["vllm-fleet-target"], port=8000,
                                            fleet=namespace)}}})
    c.api.apply({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "vllm", "namespace": namespace},
                 "spec": {"selector": {"app": "vllm"},
                          "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}})
    t0 = time.monotonic()
    pods = c.wait_for(lambda: running if len(running := running_pods(c, namespace)) >= n
                      else None, f"{n} fleet pods Running with an IP in {namespace}",
                      timeout=120 + n / 5, interval=2)
    ips = sorted({p["status"]["podIP"] for p in pods})
    log(f"{len(pods)} fleet pods running in {namespace} after {time.monotonic() - t0:.0f}s")
    admin_ports = [free_port() for _ in range(-(-len(ips) // common.TARGETS_PER_FLEET_PROCESS))]
    (workdir / namespace).mkdir(parents=True, exist_ok=True)
    fleet = common.start_fleet(c.procs, Path(c.bins["vllm-sim"]), ips, 8000, admin_ports,
                               workdir / namespace)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda pod: mark_ready(c, pod), pods))
    return fleet, pods


def mark_ready(c: Cluster, pod: dict) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conds = [{"type": t, "status": "True", "lastTransitionTime": now}
             for t in ("Ready", "ContainersReady")]
    c.api.request(
        "PATCH", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/"
        f"{pod['metadata']['name']}/status",
        {"status": {"conditions": conds,
                    "containerStatuses": [{"name": "main", "ready": True}]}},
        content_type="application/strategic-merge-patch+json")


def bins_for(component: str) -> str:
    r = subprocess.run(["bash", str(common.REPO / "hack/bin-path.sh"), component],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{component}: {r.stderr.strip()} (make compare builds it)")
    return r.stdout.strip()


class Compare:
    def __init__(self, pods: int, steps: int, spacing: float, jitter: float,
                 phases: list[str], workdir: Path, keda: bool = True):
        self.n = pods
        self.with_keda = keda
        self.steps = steps
        self.spacing = spacing
        self.jitter = jitter
        self.phases = phases
        self.workdir = workdir
        self.c: Cluster | None = None
        self.fleet: common.FleetProcs | None = None
        self.prom_port = 0
        self.keda: dict[str, object] = {}
        self.paths: dict[str, PathSpec] = {}
        self.extra_procs: dict[str, object] = {}

    # -- bring-up ------------------------------------------------------------------------------

    def start(self) -> None:
        self.c = Cluster(workdir=self.workdir / "cluster", hpa_sync_period=HPA_SYNC_PERIOD,
                         adapter_settings={"scrape-interval": "5s", "scrape-timeout": "3s",
                                           "window": "60s"},
                         external_metrics=False, simulators=False, nodes=1)
        self.c.start()
        self.create_fleet()
        self.start_prometheus()
        if self.with_keda:
            self.start_keda()
        self.create_consumers()

    def stop(self) -> None:
        if self.c:
            self.c.stop()

    def create_fleet(self) -> None:
        c = self.c
        self.fleet, pods = create_kwok_fleet(c, self.n, self.workdir)
        ips = sorted({p["status"]["podIP"] for p in pods})
        self.fleet.set_load(LOW)
        # EndpointSlices for KEDA's metrics-api scaler. The API server refuses loopback IPs in
        # IPv4/IPv6 slices (ValidateEndpointIP), so no endpointslice controller could publish
        # these pods; the harness publishes them as FQDN-typed endpoints whose names are the
        # dotted addresses (valid DNS names). KEDA reads `addresses` whatever the type.
        for k in range(0, len(ips), 100):
            name = f"vllm-{k // 100:03d}"
            c.api.request("PATCH",
                          f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{name}"
                          "?fieldManager=inferscale-compare&force=true",
                          {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                           "metadata": {"name": name, "namespace": NS, "labels": {
                               "kubernetes.io/service-name": "vllm",
                               "endpointslice.kubernetes.io/managed-by": "inferscale-compare"}},
                           "addressType": "FQDN",
                           "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                           "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}
                                         for ip in ips[k:k + 100]]},
                          content_type="application/apply-patch+yaml")

    def _pod_spec(self, command: list[str], port: int | None = None) -> dict:
        return fleet_pod_spec(command, port)

    def start_prometheus(self) -> None:
        c = self.c
        self.prom_port = free_port()
        d = self.workdir / "prometheus"
        d.mkdir(exist_ok=True)
        p = c.pki

        def job(name: str, interval: str) -> str:
            return f"""
- job_name: {name}
  scrape_interval: {interval}
  kubernetes_sd_configs:
  - role: pod
    api_server: {c.server}
    tls_config: {{ca_file: {p.ca.cert}, cert_file: {p.admin.cert}, key_file: {p.admin.key}}}
    namespaces: {{names: [{NS}]}}
  relabel_configs:
  - {{source_labels: [__meta_kubernetes_pod_label_app], regex: vllm, action: keep}}
  - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: http, action: keep}}
  - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"""
        # Prometheus' own default interval is 1 m; 15 s is the interval of its example
        # configuration and of most guides (kube-prometheus-stack: 30 s).
        (d / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs:"
                                          + job("fleet-15s", "15s") + job("fleet-5s", "5s"))
        proc = c.procs.start("prometheus", [
            bins_for("prometheus"), f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{self.prom_port}",
            "--storage.tsdb.retention.time=2h", "--log.level=warn"])
        self.extra_procs["prometheus"] = proc
        q = 'count(up{job=~"fleet-.*"} == 1)'
        # 120 s was too short at 1,000 pods on a loaded 2-core machine (1,523 of 2,000 targets
        # up 20 s before it): discovery and the first scrapes of both jobs scale with the fleet.
        c.wait_for(lambda: self.prom_query(q) >= 2 * self.n, "Prometheus scraping every pod twice",
                   timeout=120 + self.n / 4, interval=2)

    def prom_query(self, q: str) -> float:
        url = (f"http://127.0.0.1:{self.prom_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": q}))
        r = json.loads(common.http_get(url))
        res = r["data"]["result"]
        return float(res[0]["value"][1]) if res else 0.0

    def start_keda(self) -> None:
        c = self.c
        d = self.workdir / "keda"
        certs = d / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        ca = make_ca(d, "keda-ca", "keda-ca")
        leaf = make_leaf(d, ca, "keda", "keda-operator", server_names=(
            "keda-operator.keda.svc.cluster.local", "keda-operator.keda.svc",
            "keda-metrics-apiserver.keda.svc", "localhost", "127.0.0.1"), client=True)
        shutil.copy(ca.cert, certs / "ca.crt")
        shutil.copy(leaf.cert, certs / "tls.crt")
        shutil.copy(leaf.key, certs / "tls.key")
        crds = Path(bins_for("keda")).parent / "crds"
        c.kubectl("apply", "--server-side", "-f", str(crds), timeout=120)
        # The operator's informers start once; a CRD not yet served fails them ("no matches
        # for kind ScaledObject").
        names = []
        for f in sorted(crds.glob("*.yaml")):   # keda.sh_scaledobjects.yaml
            group, _, plural = f.stem.partition("_")
            names.append(f"crd/{plural}.{group}")
        c.kubectl("wait", "--for=condition=Established", *names, "--timeout=60s", timeout=90)
        c.create_namespace(KEDA_NS)
        grpc = free_port()
        env = dict(os.environ, KUBECONFIG=c.kubeconfigs["admin"], POD_NAMESPACE=KEDA_NS,
                   WATCH_NAMESPACE="", KEDA_CLUSTER_OBJECT_NAMESPACE=KEDA_NS)
        # Out of cluster with the admin identity (KEDA's own RBAC would grant the same reads);
        # everything else as the upstream manifests run it, minus what needs a pod (leader
        # election, cert rotation into a Secret, patching webhooks and APIServices).
        self.extra_procs["keda-operator"] = c.procs.start("keda-operator", [
            bins_for("keda"), "--leader-elect=false", "--zap-log-level=info",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc}", f"--cert-dir={certs}",
            f"--ca-dir={certs}", "--enable-cert-rotation=false",
            "--enable-webhook-patching=false", "--enable-apiservice-patching=false"], env=env)
        port = free_port()
        self.extra_procs["keda-adapter"] = c.procs.start("keda-adapter", [
            bins_for("keda-adapter"), f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--client-ca-file={certs / 'ca.crt'}", f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}", f"--cert-dir={certs}",
            f"--metrics-service-address=127.0.0.1:{grpc}", f"--port={free_port()}",
            # KEDA's metrics server ignores KUBECONFIG: without these it looks for the
            # in-cluster configuration and exits.
            f"--lister-kubeconfig={c.kubeconfigs['admin']}", f"--kubeconfig={c.kubeconfigs['admin']}",
            f"--authentication-kubeconfig={c.kubeconfigs['admin']}",
            f"--authorization-kubeconfig={c.kubeconfigs['admin']}", "--zap-log-level=info"],
            env=env)
        c.register_host_service(KEDA_NS, "keda-metrics-apiserver", port)
        ca_bundle = base64.b64encode(Path(ca.cert).read_bytes()).decode()
        c.api.apply({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                     "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                     "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                              "groupPriorityMinimum": 100, "versionPriority": 100,
                              "caBundle": ca_bundle,
                              "service": {"name": "keda-metrics-apiserver",
                                          "namespace": KEDA_NS, "port": SERVICE_PORT}}})

        def available() -> bool:
            for name in ("keda-operator", "keda-adapter"):
                p = self.extra_procs[name]
                if not p.alive():
                    raise RuntimeError(f"{name} died:\n{p.log_tail(40)}")
            svc = c.api.get("/apis/apiregistration.k8s.io/v1/apiservices/"
                            "v1beta1.external.metrics.k8s.io")
            return any(x["type"] == "Available" and x["status"] == "True"
                       for x in svc.get("status", {}).get("conditions", []))
        c.wait_for(available, "KEDA's metrics server Available behind the aggregator",
                   timeout=120, interval=1)

    def create_consumers(self) -> None:
        """Every path's consumer Deployment and HPA (KEDA's paths: a ScaledObject, whose HPA
        KEDA creates). The metrics-api ScaledObject is created only for its phase."""
        target = str(self.n)
        behavior = {"scaleDown": {"stabilizationWindowSeconds": 0}}
        specs = [
            PathSpec("inferscale-5s", "inferscale, 5 s scrape", "inferscale", phases=("A",)),
            PathSpec("inferscale-1s", "inferscale, 1 s scrape", "inferscale", phases=("B",)),
            PathSpec("keda-prom15", "Prometheus 15 s + KEDA (defaults: polling 30 s)",
                     "keda-hpa-keda-prom15", phases=("A", "B")),
            PathSpec("keda-prom15-cached", "Prometheus 15 s + KEDA, useCachedMetrics, polling 30 s",
                     "keda-hpa-keda-prom15-cached", phases=("A", "B")),
            PathSpec("keda-prom5", "Prometheus 5 s + KEDA polling 5 s",
                     "keda-hpa-keda-prom5", phases=("A", "B")),
            PathSpec("keda-metrics-api", "KEDA metrics-api, format prometheus, over the pods",
                     "keda-hpa-keda-metrics-api", phases=("C",)),
        ]
        if not self.with_keda:
            specs = specs[:2] + [
                PathSpec("prom15", "Prometheus 15 s (query polled directly; no KEDA)", "",
                         phases=("A", "B"),
                         prom_query='sum(vllm:num_requests_waiting{job="fleet-15s"})'),
                PathSpec("prom5", "Prometheus 5 s (query polled directly; no KEDA)", "",
                         phases=("A", "B"),
                         prom_query='sum(vllm:num_requests_waiting{job="fleet-5s"})'),
            ]
        self.paths = {s.name: s for s in specs}
        consumers = ["inferscale"]
        if self.with_keda:
            consumers += ["keda-prom15", "keda-prom15-cached", "keda-prom5", "keda-metrics-api"]
        for name in consumers:
            self.c.api.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                              "metadata": {"name": f"c-{name}", "namespace": NS},
                              "spec": {"replicas": 1,
                                       "selector": {"matchLabels": {"app": f"c-{name}"}},
                                       "template": {"metadata": {"labels": {"app": f"c-{name}"}},
                                                    "spec": self._pod_spec(["sleep"])}}})
        self.c.api.apply({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "inferscale", "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "c-inferscale"},
                     "minReplicas": 1, "maxReplicas": 10,
                     "metrics": [{"type": "Object", "object": {
                         "describedObject": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "vllm"},
                         "metric": {"name": "vllm_num_requests_waiting"},
                         "target": {"type": "AverageValue", "averageValue": target}}}],
                     "behavior": behavior}})
        api = (f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/deployments.apps/vllm/"
               "vllm_num_requests_waiting")
        self.paths["inferscale-5s"].api_path = api
        self.paths["inferscale-1s"].api_path = api
        if not self.with_keda:
            return
        prom = f"http://127.0.0.1:{self.prom_port}"
        self.scaled_object("keda-prom15", None, {
            "type": "prometheus", "metadata": {
                "serverAddress": prom, "threshold": target,
                "query": 'sum(vllm:num_requests_waiting{job="fleet-15s"})'}})
        self.scaled_object("keda-prom15-cached", None, {
            "type": "prometheus", "useCachedMetrics": True, "metadata": {
                "serverAddress": prom, "threshold": target,
                "query": 'sum(vllm:num_requests_waiting{job="fleet-15s"})'}})
        self.scaled_object("keda-prom5", 5, {
            "type": "prometheus", "metadata": {
                "serverAddress": prom, "threshold": target,
                "query": 'sum(vllm:num_requests_waiting{job="fleet-5s"})'}})

    def scaled_object(self, name: str, polling: int | None, trigger: dict) -> None:
        spec = {"scaleTargetRef": {"name": f"c-{name}"}, "maxReplicaCount": 10,
                "advanced": {"horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}},
                "triggers": [trigger]}
        if polling is not None:
            spec["pollingInterval"] = polling
        self.c.api.request(
            "PATCH", f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/{name}"
            "?fieldManager=inferscale-compare&force=true",
            {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
             "metadata": {"name": name, "namespace": NS}, "spec": spec},
            content_type="application/apply-patch+yaml")
        hpa_name = f"keda-hpa-{name}"

        def metric() -> str | None:
            try:
                hpa = self.c.hpa(NS, hpa_name)
            except KubeError:
                return None
            ext = hpa["spec"]["metrics"][0]["external"]["metric"]
            sel = ",".join(f"{k}={v}" for k, v in ext["selector"]["matchLabels"].items())
            return (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{ext['name']}?"
                    + urllib.parse.urlencode({"labelSelector": sel}))
        self.paths[name].api_path = self.c.wait_for(metric, f"KEDA's HPA {hpa_name}",
                                                    timeout=60, interval=1)

    def metrics_api_on(self, on: bool) -> None:
        if on:
            self.scaled_object("keda-metrics-api", None, {
                "type": "metrics-api", "metadata": {
                    "url": f"http://vllm.{NS}.svc:8000/metrics", "format": "prometheus",
                    "valueLocation": "vllm:num_requests_waiting",
                    "aggregateFromKubeServiceEndpoints": "true", "aggregationType": "sum",
                    "targetValue": str(self.n)}})
        else:
            self.c.api.delete(f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/"
                              "keda-metrics-api")

    def set_adapter_interval(self, interval: str) -> None:
        c = self.c
        if c.adapter_settings["scrape-interval"] == interval and c.adapter:
            return
        c.stop_adapter()
        c.adapter_settings["scrape-interval"] = interval
        # The adapter refuses a timeout not below the interval (3 s at 5 s; 800 ms at 1 s).
        c.adapter_settings["scrape-timeout"] = "3s" if interval == "5s" else "800ms"
        c.start_adapter(wait=True)
        c.wait_adapter_available()

    # -- measuring -----------------------------------------------------------------------------

    def read_value(self, p: PathSpec) -> float | None:
        if p.prom_query:
            r = json.loads(common.http_get(
                f"http://127.0.0.1:{self.prom_port}/api/v1/query?"
                + urllib.parse.urlencode({"query": p.prom_query})))
            res = r["data"]["result"]
            return float(res[0]["value"][1]) if res else None
        body = self.c.api.get(p.api_path)
        items = body.get("items", [])
        return quantity(items[0]["value"]) if items else None

    def settle(self, paths: list[PathSpec], level: int, timeout: float = 180) -> None:
        want = self.n * level

        def settled() -> bool:
            for p in paths:
                try:
                    v = self.read_value(p)
                except (KubeError, OSError):
                    return False
                if v is None or abs(v - want) > 0.5:
                    return False
                if not p.hpa:
                    continue
                hpa = self.c.hpa(NS, p.hpa)
                if hpa.get("status", {}).get("desiredReplicas") != level:
                    return False
            return True
        self.c.wait_for(settled, f"every path to show {want} waiting and {level} replicas",
                        timeout=timeout, interval=1)

    def run_phase(self, name: str) -> PhaseRecord:
        paths = [p for p in self.paths.values() if name in p.phases]
        if name == "A":
            self.set_adapter_interval("5s")
        elif name == "B":
            self.set_adapter_interval("1s")
        elif name == "C":
            self.metrics_api_on(True)
        log(f"phase {name}: {', '.join(p.name for p in paths)}; {self.steps} steps")
        self.fleet.set_load(LOW)
        self.settle(paths, LOW)
        rec = PhaseRecord(name)
        rec.load_before = common.load_note()
        stop = threading.Event()
        threads = []
        for p in paths:
            rec.api[p.name] = []
            threads.append(threading.Thread(target=self._poll_api, args=(p, rec.api[p.name], stop),
                                            daemon=True))
        threads.append(threading.Thread(target=self._poll_hpas, args=(rec.hpa, stop), daemon=True))
        procs = {"inferscale adapter": self.c.adapter,
                 "kube-apiserver": self.c.components["kube-apiserver"],
                 "fleet": self.fleet.procs[0], **self.extra_procs}
        cpu0 = {k: common.sample(p.pid) for k, p in procs.items() if p and p.alive()}
        for t in threads:
            t.start()
        level = LOW
        try:
            for i in range(self.steps):
                time.sleep(self.spacing + random.uniform(0, self.jitter))
                level = HIGH if level == LOW else LOW
                at = self.fleet.set_load(level)
                rec.steps.append((at, level))
                log(f"phase {name} step {i + 1}/{self.steps}: {level} waiting per pod")
                self.c.check_components()
            time.sleep(self.spacing)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        cpu1 = {k: common.sample(p.pid) for k, p in procs.items() if p and p.alive()}
        rec.cpu = {k: round((cpu1[k].cpu - cpu0[k].cpu) / (cpu1[k].at - cpu0[k].at), 3)
                   for k in cpu1 if k in cpu0}
        rec.load_after = common.load_note()
        if name == "C":
            self.metrics_api_on(False)
        return rec

    def _poll_api(self, p: PathSpec, out: list[Sample], stop: threading.Event) -> None:
        while not stop.is_set():
            sent = time.time()
            try:
                v = self.read_value(p)
                out.append(Sample(sent, time.time(), v))
            except Exception as e:  # keep polling: an error is a sample too
                out.append(Sample(sent, time.time(), None, str(e)[:200]))
            time.sleep(max(0.0, POLL_SECONDS - (time.time() - sent)))

    def _poll_hpas(self, out: dict[str, list[tuple[float, int]]], stop: threading.Event) -> None:
        path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
        while not stop.is_set():
            sent = time.time()
            try:
                items = self.c.api.get(path)["items"]
                now = time.time()
                for h in items:
                    out.setdefault(h["metadata"]["name"], []).append(
                        (now, h.get("status", {}).get("desiredReplicas", 0)))
            except Exception:
                pass
            time.sleep(max(0.0, POLL_SECONDS - (time.time() - sent)))


# --- analysis ---------------------------------------------------------------------------------

def delays(rec: PhaseRecord, path: PathSpec, n: int) -> tuple[list[float | None], list[float | None]]:
    """Per step: seconds until the API showed the new total, and until the HPA wanted the new
    replica count (None: not within the step)."""
    api, hpa = [], []
    samples = rec.api.get(path.name, [])
    desired = rec.hpa.get(path.hpa, [])
    for i, (at, level) in enumerate(rec.steps):
        end = rec.steps[i + 1][0] if i + 1 < len(rec.steps) else math.inf
        want = n * level
        api.append(next((s.received - at for s in samples
                         if at <= s.received < end and s.value is not None
                         and abs(s.value - want) <= 0.5), None))
        hpa.append(next((t - at for t, d in desired if at <= t < end and d == level), None))
    return api, hpa


def summarize(records: list[PhaseRecord], paths: dict[str, PathSpec], n: int) -> dict:
    out = {}
    for p in paths.values():
        api_all, hpa_all, errors, polls = [], [], 0, 0
        for rec in records:
            if p.name not in rec.api:
                continue
            a, h = delays(rec, p, n)
            api_all += a
            hpa_all += h
            errors += sum(1 for s in rec.api[p.name] if s.error)
            polls += len(rec.api[p.name])
        if not api_all:
            continue

        def stats(xs: list[float | None]) -> dict:
            got = [x for x in xs if x is not None]
            return {"steps": len(xs), "missed": len(xs) - len(got),
                    "p50": round(common.percentile(got, 0.5), 3) if got else None,
                    "p99": round(common.percentile(got, 0.99), 3) if got else None,
                    "max": round(max(got), 3) if got else None,
                    "values": [None if x is None else round(x, 3) for x in xs]}
        out[p.name] = {"label": p.label, "api": stats(api_all),
                       "hpa": stats(hpa_all) if p.hpa else None,
                       "poll_errors": errors, "polls": polls}
    return out


def table(summary: dict) -> str:
    def cell(s: dict | None, k: str) -> str:
        if s is None:
            return "n/a (no HPA)"
        v = s[k]
        if v is None:
            return "—"
        more = f" ({s['missed']} of {s['steps']} steps never)" if s["missed"] and k == "p99" else ""
        return f"{v:.2f} s{more}"
    lines = ["| path | steps | step → API p50 | step → API p99 | step → desiredReplicas p50 | step → desiredReplicas p99 |",
             "|---|---|---|---|---|---|"]
    for s in summary.values():
        lines.append(f"| {s['label']} | {s['api']['steps']} | {cell(s['api'], 'p50')} | "
                     f"{cell(s['api'], 'p99')} | {cell(s['hpa'], 'p50')} | {cell(s['hpa'], 'p99')} |")
    return "\n".join(lines)


def svg(summary: dict, n: int) -> str:
    groups = [s["label"] for s in summary.values()]
    series = [
        ("step → API p50", [s["api"]["p50"] or math.nan for s in summary.values()]),
        ("step → API p99", [s["api"]["p99"] or math.nan for s in summary.values()]),
        ("step → desiredReplicas p50",
         [(s["hpa"] or {}).get("p50") or math.nan for s in summary.values()]),
        ("step → desiredReplicas p99",
         [(s["hpa"] or {}).get("p99") or math.nan for s in summary.values()]),
    ]
    return common.bar_chart(groups, series,
                            f"Freshness: load step → metric API / HPA, {n:,} pods (seconds, log scale)",
                            "seconds", width=900, height=440, logy=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20, help="load steps per phase")
    ap.add_argument("--spacing", type=float, default=40.0,
                    help="seconds between steps (plus up to --jitter)")
    ap.add_argument("--jitter", type=float, default=10.0)
    ap.add_argument("--phases", default="A,B,C")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--without-keda", action="store_true",
                    help="no KEDA: poll Prometheus' query directly instead (phase C dropped)")
    args = ap.parse_args()
    if not Path("/proc/net/dev").read_text().count(":") == 1:
        raise SystemExit("run inside a network namespace of its own (make compare does: "
                         "unshare -n), so nothing binds beyond loopback")
    common.require_capture()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"inferscale-compare-{os.getpid()}"
    workdir.mkdir(parents=True)
    phases = args.phases.split(",")
    if args.without_keda:
        phases = [p for p in phases if p != "C"]
    cmp = Compare(args.pods, args.steps, args.spacing, args.jitter, phases, workdir,
                  keda=not args.without_keda)
    records: list[PhaseRecord] = []
    t0 = time.monotonic()
    ok = False
    try:
        cmp.start()
        log(f"stack up in {time.monotonic() - t0:.0f}s")
        for phase in cmp.phases:
            records.append(cmp.run_phase(phase))
            # Written after every phase: an hour's run that fails in its last phase keeps
            # the phases it finished.
            write_results(args, cmp, records, complete=len(records) == len(cmp.phases))
        ok = True
    finally:
        if not ok and cmp.c:
            cmp.c.failed = True
            log(cmp.c.log_tails(30))
        cmp.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    summary = summarize(records, cmp.paths, args.pods)
    print(table(summary))
    for r in records:
        print(f"phase {r.name}: CPU cores {r.cpu}; {r.load_before} -> {r.load_after}")


def write_results(args: argparse.Namespace, cmp: Compare, records: list[PhaseRecord],
                  complete: bool) -> None:
    """docs/perf/compare.json and compare.svg from the phases run so far."""
    summary = summarize(records, cmp.paths, args.pods)
    result = {
        "pods": args.pods, "steps_per_phase": args.steps, "spacing_s": args.spacing,
        "jitter_s": args.jitter, "hpa_sync_period": HPA_SYNC_PERIOD, "summary": summary,
        "phases": [{"name": r.name, "cpu_cores": r.cpu, "load_before": r.load_before,
                    "load_after": r.load_after, "steps": r.steps} for r in records],
        "complete": complete,
        "keda": not args.without_keda,
        "versions": {c: Path(bins_for(c)).parent.name
                     for c in ("prometheus", "keda") if c != "keda" or not args.without_keda},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT_DIR / "compare.svg").write_text(svg(summary, args.pods))


if __name__ == "__main__":
    main()
