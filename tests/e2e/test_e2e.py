"""End-to-end: the HPA scales a simulated vLLM fleet through the adapter, on a real control plane.

Each scenario runs in its own namespace on the one cluster of the session (``conftest.py``):

a. ``kubectl get --raw`` on every custom (v1beta1, v1beta2) and external path returns values
   that follow from the load the simulators were given;
b. an HPA on ``vllm_num_requests_waiting`` (Pods, AverageValue) scales up under load and back
   down when it ends;
c. the same on ``vllm_time_to_first_token_p95`` (milliseconds);
d. a replica whose ``/metrics`` dies is missing (not 0) and the HPA does not scale down for it;
e. requests the adapter must refuse are refused, through the aggregator and directly;
f. the adapter restarts mid-run and the HPA recovers without a wrong scaling decision.

Real requests drive a–c. d and f need a fleet whose correct replica count is known exactly, so
they give each simulator a fixed synthetic load (``POST /admin/load``) that puts the HPA at
exactly its target: any wrong value (a 0 for a dead pod, a half-empty store after a restart)
would move it, and the recorded decisions prove it did not.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse

import pytest

from .cluster import HOLD_UNREADY_ANNOTATION, Cluster, HarnessError
from .kube import Kube, KubeError, quantity, ssl_context
from .load import ClosedLoopLoad, metrics_down, metrics_up, set_synthetic_load

CUSTOM = "/apis/custom.metrics.k8s.io"
EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1"
WAITING = "vllm_num_requests_waiting"
RUNNING = "vllm_num_requests_running"
TTFT_P95 = "vllm_time_to_first_token_p95"

# vLLM's time_to_first_token_seconds bucket bounds (vllm/v1/metrics/loggers.py, >= 0.8.4),
# copied here rather than taken from our crates so expected percentiles are computed
# independently of the code under test.
VLLM_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                     2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]


def p95_of_constant(seconds: float) -> float:
    """histogram_quantile(0.95) of observations that all equal ``seconds``: linear
    interpolation inside the one bucket that holds them, in milliseconds."""
    lower = 0.0
    for upper in VLLM_TTFT_BUCKETS:
        if seconds <= upper:
            return (lower + (upper - lower) * 0.95) * 1000
        lower = upper
    raise ValueError(seconds)


# --- helpers ---------------------------------------------------------------------------------

def selector_of(name: str) -> str:
    return f"app.kubernetes.io/name={name}"


def pod_values(c: Cluster, ns: str, metric: str, version: str = "v1beta2",
               query: str = "") -> dict[str, float]:
    """``kubectl get --raw`` of pods/*: pod name -> value."""
    r = c.get_raw(f"{CUSTOM}/{version}/namespaces/{ns}/pods/*/{metric}{query}")
    assert r["kind"] == "MetricValueList", r
    out = {}
    for item in r["items"]:
        obj = item["describedObject"]
        assert obj["kind"] == "Pod" and obj["namespace"] == ns, item
        name = item["metricName"] if version == "v1beta1" else item["metric"]["name"]
        assert name == metric, item
        out[obj["name"]] = quantity(item["value"])
    return out


def single_value(doc: dict) -> float:
    assert len(doc["items"]) == 1, doc
    return quantity(doc["items"][0]["value"])


def running_pods(c: Cluster, ns: str, name: str, ready: bool = False) -> list[str]:
    return sorted(p["metadata"]["name"] for p in c.pods(ns, selector_of(name))
                  if p.get("status", {}).get("phase") == "Running"
                  and not p["metadata"].get("deletionTimestamp")
                  and (not ready or is_ready(p)))


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def wait_fleet(c: Cluster, ns: str, name: str, replicas: int, timeout: float = 60) -> list[str]:
    """Waits until the Deployment has exactly ``replicas`` Running pods, all Ready (their
    simulators answer); returns the simulators' addresses."""
    def ready():
        pods = running_pods(c, ns, name)
        if len(pods) != replicas or len(running_pods(c, ns, name, ready=True)) != replicas:
            return None
        addrs = [c.fleet.sim_address(ns, p) for p in pods]
        if None in addrs:
            return None
        return addrs
    return c.wait_for(ready, f"{ns}/{name} to run {replicas} simulators", timeout=timeout)


def addresses(c: Cluster, ns: str, name: str) -> list[str]:
    return [f"{ip}:8000" for ip in c.ready_pod_ips(ns, selector_of(name))]


def condition(hpa: dict, kind: str) -> dict | None:
    for cond in hpa.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return cond
    return None


def hpa_average(hpa: dict, metric: str) -> float | None:
    for m in hpa.get("status", {}).get("currentMetrics") or []:
        if m.get("type") == "Pods" and m["pods"]["metric"]["name"] == metric:
            return quantity(m["pods"]["current"]["averageValue"])
    return None


class HpaRecorder(threading.Thread):
    """Records the HPA's status and the Deployment's replicas every half second, so a test
    can prove what the HPA decided over time, not just where it ended."""

    def __init__(self, c: Cluster, ns: str, hpa: str, deployment: str):
        super().__init__(daemon=True, name=f"hpa-{ns}-{hpa}")
        self.c, self.ns, self.name, self.deployment = c, ns, hpa, deployment
        self.samples: list[dict] = []
        self.started = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            try:
                h = self.c.hpa(self.ns, self.name)
                d = self.c.deployment(self.ns, self.deployment)
            except Exception:  # noqa: BLE001 — one failed read must not end the record
                continue
            st = h.get("status", {})
            active = condition(h, "ScalingActive") or {}
            self.samples.append({
                "t": time.monotonic(),
                "desired": st.get("desiredReplicas"),
                "current": st.get("currentReplicas"),
                "spec": d["spec"]["replicas"],
                "active": active.get("status"),
                "reason": active.get("reason"),
                "metrics": {m["pods"]["metric"]["name"]: m["pods"]["current"]["averageValue"]
                            for m in st.get("currentMetrics") or [] if m.get("type") == "Pods"},
            })

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def since(self, t: float) -> list[dict]:
        return [s for s in self.samples if s["t"] >= t]

    def summary(self, t: float | None = None) -> str:
        """Each change of what the HPA reported, seconds after ``t`` (default: start)."""
        t = self.started if t is None else t
        rows = []
        prev = None
        for s in self.since(t):
            key = (s["desired"], s["spec"], s["active"], s["reason"], tuple(s["metrics"].items()))
            if key != prev:
                rows.append(f"{s['t'] - t:6.1f}s desired={s['desired']} spec={s['spec']} "
                            f"active={s['active']}({s['reason']}) metrics={s['metrics']}")
                prev = key
        return "\n".join(rows)


def rescale_events(c: Cluster, ns: str, hpa: str) -> list[str]:
    return [e.get("message", "") for e in c.events(ns, hpa)
            if e.get("reason") == "SuccessfulRescale"]


def steady_synthetic_fleet(c: Cluster, ns: str, name: str, replicas: int, **load) -> list[str]:
    """A Deployment of ``replicas`` simulators, each given the same synthetic load."""
    c.create_deployment(ns, name, replicas=replicas, model=f"{name}-model", max_num_seqs=4)
    addrs = wait_fleet(c, ns, name, replicas)
    for a in addrs:
        set_synthetic_load(a, **load)
    # An HPA created next must read the load, not the simulators' idle first scrapes.
    pods = set(running_pods(c, ns, name))

    def served() -> bool:
        if "waiting" in load:
            values = pod_values(c, ns, WAITING)
            if any(values.get(p) != load["waiting"] for p in pods):
                return False
        if "ttft_seconds" in load:
            values = pod_values(c, ns, TTFT_P95)
            want = p95_of_constant(load["ttft_seconds"])
            if any(abs(values.get(p, -1) - want) > 0.5 for p in pods):
                return False
        return True
    c.wait_for(served, f"the adapter to serve the synthetic load of {name}", 30)
    return addrs


# --- 0. the aggregator can use the adapter ---------------------------------------------------

def test_0_aggregator_discovers_the_metrics_apis(cluster: Cluster):
    """The kube-apiserver's aggregated discovery must list the metrics APIs as fresh: the
    HPA controller finds the custom metrics API version through discovery, and client-go drops
    stale group versions ("no known available metric versions found" — no HPA can work).
    The aggregator also fetches the adapter's OpenAPI, as user system:aggregator."""
    c = cluster
    want = {("custom.metrics.k8s.io", "v1beta2"), ("custom.metrics.k8s.io", "v1beta1"),
            ("external.metrics.k8s.io", "v1beta1")}

    def freshness():
        code, body = c.api.raw("GET", "/apis", headers={
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"})
        assert code == 200, body
        seen = {}
        for group in json.loads(body)["items"]:
            for v in group["versions"]:
                seen[(group["metadata"]["name"], v["version"])] = v.get("freshness", "Current")
        return {gv: seen.get(gv, "absent") for gv in want}

    # The aggregator refreshes discovery within seconds of an APIService turning Available.
    try:
        c.wait_for(lambda: all(f == "Current" for f in freshness().values()),
                   "aggregated discovery to list the metrics APIs as Current", 20)
    except AssertionError:
        raise AssertionError(
            f"aggregated discovery of the metrics APIs: {freshness()}; the kube-apiserver "
            "asks the adapter for GET /apis with Accept: application/json;g=apidiscovery.k8s.io;"
            "v=v2;as=APIGroupDiscoveryList (expects that document, or 406 to fall back to "
            "GET /apis/<group>/<version> as user system:kube-aggregator without groups)") \
            from None
    for version in ("v1beta1", "v1beta2"):
        names = {r["name"] for r in c.get_raw(f"{CUSTOM}/{version}")["resources"]}
        assert {f"pods/{WAITING}", f"deployments.apps/{TTFT_P95}"} <= names, sorted(names)[:20]
    names = {r["name"] for r in c.get_raw(EXTERNAL)["resources"]}
    assert {WAITING, TTFT_P95} <= names, sorted(names)[:20]

    def openapi_has_metrics():
        index = c.api.get("/openapi/v3")["paths"]
        return all(f"apis/{g}/{v}" in index for g, v in want)
    try:
        c.wait_for(openapi_has_metrics, "the aggregated OpenAPI v3 to include the metrics APIs",
                   15)
    except AssertionError:
        raise AssertionError(
            "kube-apiserver /openapi/v3 lacks the metrics APIs: the aggregator could not "
            "download the adapter's OpenAPI as user system:aggregator") from None


# --- a. values ------------------------------------------------------------------------------

def test_a_metric_values_follow_the_load(cluster: Cluster):
    """Three Deployments given known load; every API path must report what follows from it."""
    c, ns = cluster, "e2e-values"
    # busy: 2 replicas x max_num_seqs 2 under 10 closed-loop clients -> each pod holds ~5
    # requests: 2 running (exactly: the batch is full) and ~3 waiting.
    c.create_deployment(ns, "busy", replicas=2, model="busy-model", max_num_seqs=2)
    # calm: room for every request (8 slots, 2 clients) -> nothing waits, and every TTFT is
    # the simulator's 150 ms (+ a few µs of prefill): the middle of vLLM's (0.1, 0.25]
    # bucket, so a request delayed by up to 100 ms on a loaded machine still lands in it.
    c.create_deployment(ns, "calm", replicas=1, model="calm-model", max_num_seqs=8,
                        ttft="150ms")
    # fixed: exact synthetic gauges, and 2 GPUs per pod.
    c.create_deployment(ns, "fixed", replicas=1, model="fixed-model", max_num_seqs=4, gpus=2)
    wait_fleet(c, ns, "busy", 2)
    wait_fleet(c, ns, "calm", 1)
    [fixed_addr] = wait_fleet(c, ns, "fixed", 1)
    set_synthetic_load(fixed_addr, waiting=7, running=3)
    busy_pods, calm_pods = running_pods(c, ns, "busy"), running_pods(c, ns, "calm")
    [fixed_pod] = running_pods(c, ns, "fixed")

    with ClosedLoopLoad(lambda: addresses(c, ns, "busy"), "busy-model", concurrency=10,
                        name="busy") as busy, \
            ClosedLoopLoad(lambda: addresses(c, ns, "calm"), "calm-model", concurrency=2,
                           name="calm") as calm:
        # Let the 20 s window fill with the steady state.
        c.wait_for(lambda: busy.completed > 60 and calm.completed > 40, "load to run", 60)
        time.sleep(22)

        for version in ("v1beta1", "v1beta2"):
            # Gauges are instants: two requests of a full batch finish together and their
            # clients take a moment to send the next, so one scrape in a few hundred may
            # catch a pod between requests. Retry briefly until a scrape shows the steady
            # state; a wrong value that persists still fails.
            seen: list[tuple[dict, dict]] = []

            def steady_gauges():
                running = pod_values(c, ns, RUNNING, version)
                waiting = pod_values(c, ns, WAITING, version)
                seen.append((running, waiting))
                ok = (set(running) == set(busy_pods + calm_pods + [fixed_pod])
                      and set(waiting) == set(running)
                      and all(running[p] == 2 and 2 <= waiting[p] <= 4 for p in busy_pods)
                      and waiting[calm_pods[0]] == 0 and 1 <= running[calm_pods[0]] <= 2)
                return (running, waiting) if ok else None
            try:
                running, waiting = c.wait_for(steady_gauges, "the steady-state gauges", 15)
            except AssertionError as e:
                raise AssertionError(f"{version}: {e}; last running/waiting seen: "
                                     f"{seen[-1] if seen else None}") from None
            assert waiting[fixed_pod] == 7 and running[fixed_pod] == 3, (waiting, running)

            # One pod by name, and the Deployment (sum over its pods).
            one = c.get_raw(f"{CUSTOM}/{version}/namespaces/{ns}/pods/{fixed_pod}/{WAITING}")
            assert single_value(one) == 7
            dep = c.get_raw(f"{CUSTOM}/{version}/namespaces/{ns}/deployments.apps/busy/"
                            f"{RUNNING}")
            assert single_value(dep) == 4
            assert dep["items"][0]["describedObject"]["kind"] == "Deployment"
            dep_waiting = single_value(c.get_raw(
                f"{CUSTOM}/{version}/namespaces/{ns}/deployments.apps/busy/{WAITING}"))
            assert 3 <= dep_waiting <= 8, dep_waiting

            # The namespace object: every scraped pod of the namespace.
            nsv = single_value(c.get_raw(f"{CUSTOM}/{version}/namespaces/{ns}/metrics/"
                                         f"{RUNNING}"))
            assert 4 + 3 <= nsv <= 4 + 3 + 2, nsv  # calm's 1-2 may read 0 for an instant

        # A node object: every scraped pod on the node, of any namespace.
        node = next(p["spec"]["nodeName"] for p in c.pods(ns)
                    if p["metadata"]["name"] == fixed_pod)
        pods_on_node = c.api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")["items"]
        running = {(n, pod): v
                   for n in {p["metadata"]["namespace"] for p in pods_on_node}
                   for pod, v in pod_values(c, n, RUNNING).items()}
        on_node = sum(running.get((p["metadata"]["namespace"], p["metadata"]["name"]), 0)
                      for p in pods_on_node)
        node_value = single_value(c.get_raw(f"{CUSTOM}/v1beta2/nodes/{node}/{RUNNING}"))
        assert abs(node_value - on_node) <= 1, (node, node_value, running)
        assert node_value >= 3

        # TTFT p95 in milliseconds. calm: every observation ~0.15 s, inside vLLM's
        # (0.1, 0.25] bucket -> histogram_quantile gives 100 + 150 * 0.95 = 242.5 ms.
        ttft = pod_values(c, ns, TTFT_P95)
        assert ttft[calm_pods[0]] == pytest.approx(p95_of_constant(0.15), abs=0.5), ttft
        # busy: requests queue behind the full batch, so TTFT is well above 200 ms.
        for p in busy_pods:
            assert ttft[p] > 500, ttft
        assert fixed_pod not in ttft, "no request reached 'fixed': its TTFT is missing, not 0"

        # Request rate: what the clients saw completing, over the adapter's window.
        rps = pod_values(c, ns, "inferscale_requests_per_second")
        seen = busy.rate(20)
        assert sum(rps[p] for p in busy_pods) == pytest.approx(seen, rel=0.25), (rps, seen)
        assert fixed_pod not in rps or rps[fixed_pod] == 0

        # GPUs, joined from the fake dcgm-exporter of each pod's node.
        gpus = pod_values(c, ns, "inferscale_gpus")
        assert gpus == {**{p: 1 for p in busy_pods + calm_pods}, fixed_pod: 2}, gpus
        util = pod_values(c, ns, "inferscale_gpu_utilization_ratio")
        for p in busy_pods:
            assert util[p] == 1, util  # requests waiting: the GPU is saturated

        # external.metrics.k8s.io: by model, by workload, by pod label.
        q = urllib.parse.quote
        by_model = c.get_raw(f"{EXTERNAL}/namespaces/{ns}/{RUNNING}?labelSelector="
                             f"{q('model_name=busy-model')}")
        assert single_value(by_model) == 4
        assert by_model["items"][0]["metricLabels"] == {"model_name": "busy-model"}
        by_workload = c.get_raw(f"{EXTERNAL}/namespaces/{ns}/{WAITING}?labelSelector="
                                f"{q('workload=fixed')}")
        assert single_value(by_workload) == 7
        by_label = c.get_raw(f"{EXTERNAL}/namespaces/{ns}/{RUNNING}?labelSelector="
                             f"{q('app.kubernetes.io/name in (busy,fixed)')}")
        assert single_value(by_label) == 7
        all_ns = single_value(c.get_raw(f"{EXTERNAL}/namespaces/{ns}/{WAITING}"))
        assert 7 + 4 <= all_ns <= 7 + 8, all_ns
        ext_ttft = single_value(c.get_raw(f"{EXTERNAL}/namespaces/{ns}/{TTFT_P95}?"
                                          f"labelSelector={q('model_name=calm-model')}"))
        assert ext_ttft == pytest.approx(p95_of_constant(0.15), abs=0.5)
        assert busy.errors == 0 and calm.errors == 0, (busy.last_error, calm.last_error)


# --- b. scale on queue depth ----------------------------------------------------------------

def test_b_hpa_scales_on_queue_depth(cluster: Cluster):
    c, ns, name = cluster, "e2e-queue", "vllm"
    c.create_deployment(ns, name, replicas=1, model="queue-model", max_num_seqs=2)
    wait_fleet(c, ns, name, 1)
    # Target 4 waiting per replica. With C clients, R replicas of 2 slots: waiting ~ C - 2R,
    # so the HPA asks for (C - 2R) / 4 replicas: 24 clients settle at R = 24 / (2 + 4) = 4.
    # (A target equal to the slot count would make the loop marginally stable.)
    c.create_hpa(ns, name, name, WAITING, "4", min_replicas=1, max_replicas=6,
                 scale_down_window=10)
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    try:
        c.wait_for(lambda: (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
                   == "True", "the HPA to read the metric (ScalingActive)", 60)
        t0 = time.monotonic()
        with ClosedLoopLoad(lambda: addresses(c, ns, name), "queue-model", concurrency=24,
                            name="queue") as load:
            c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] >= 3,
                       "the HPA to scale up under load", 90)
            # Let it settle; the fleet must hold between 3 and 6 replicas while the load runs.
            def converged():
                n = c.deployment(ns, name)["spec"]["replicas"]
                return n >= 3 and len(running_pods(c, ns, name)) == n
            c.wait_for(converged, "the new replicas to run", 60)

            # What the HPA saw is what the adapter serves: the mean over the Ready pods.
            # The fleet moves while it settles (pods turning Ready, clients re-spread, the
            # first pod draining) and the HPA reads every few seconds, so wait for a moment
            # when the HPA, the API and the adapter describe the same fleet.
            def settled():
                h = c.hpa(ns, name)
                st = h.get("status", {})
                avg = hpa_average(h, WAITING)
                if avg is None or st.get("desiredReplicas") != st.get("currentReplicas"):
                    return None
                ready = set(running_pods(c, ns, name, ready=True))
                if len(ready) != st["currentReplicas"]:
                    return None
                values = pod_values(c, ns, WAITING)
                if set(values) != ready:
                    return None
                mean = sum(values.values()) / len(values)
                return (h, avg) if abs(mean - avg) <= 1.5 else None
            h, avg = c.wait_for(settled, "the HPA, the API and the adapter to agree", 60)
            assert condition(h, "ScalingActive")["status"] == "True", h["status"]
            assert condition(h, "AbleToScale")["status"] == "True", h["status"]
            assert avg > 0, h["status"]
            assert 3 <= h["status"]["desiredReplicas"] <= 6, rec.summary(t0)
            # A replica removed mid-request drops its connections (kwok deletes pods at
            # once); anything the simulators answered must have succeeded.
            assert load.http_errors == 0, load.last_error
        peak = max(s["spec"] for s in rec.since(t0))
        assert peak >= 3, rec.summary(t0)
        c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] == 1,
                   "the HPA to scale back down to 1 after the load", 90)
        assert hpa_average(c.hpa(ns, name), WAITING) == 0
        # The HPA controller records events asynchronously, after it scaled.
        c.wait_for(lambda: any("below target" in m for m in rescale_events(c, ns, name)),
                   "the scale-down event", 15)
        assert any("above target" in m for m in rescale_events(c, ns, name)), \
            rescale_events(c, ns, name)
        assert all(s["spec"] <= 6 for s in rec.since(t0)), rec.summary(t0)
    finally:
        rec.stop()
        print(rec.summary())


# --- c. scale on TTFT p95 -------------------------------------------------------------------

def test_c_hpa_scales_on_ttft_p95_milliseconds(cluster: Cluster):
    c, ns, name = cluster, "e2e-ttft", "vllm"
    c.create_deployment(ns, name, replicas=1, model="ttft-model", max_num_seqs=2,
                        ttft="150ms")
    wait_fleet(c, ns, name, 1)
    # Target 800 (milliseconds). Unqueued requests take 150 ms to the first token (p95 242.5
    # by vLLM's buckets, with 100 ms of the bucket to spare for a loaded machine); 12 clients
    # on one replica of 2 slots queue for seconds.
    c.create_hpa(ns, name, name, TTFT_P95, "800", min_replicas=1, max_replicas=5,
                 scale_down_window=10)
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    t0 = time.monotonic()
    try:
        with ClosedLoopLoad(lambda: addresses(c, ns, name), "ttft-model", concurrency=12,
                            name="ttft") as load:
            c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] >= 3,
                       "the HPA to scale up on TTFT", 90)
            # The HPA controller scales the Deployment first and writes its own status after,
            # so the metric it acted on shows up in the HPA a moment later.
            def status_with_ttft():
                h = c.hpa(ns, name)
                return h if hpa_average(h, TTFT_P95) is not None else None
            h = c.wait_for(status_with_ttft, "the HPA status to carry the TTFT it scaled on", 30)
            assert condition(h, "ScalingActive")["status"] == "True", h["status"]
            peak_avg = max([hpa_average(h, TTFT_P95)]
                           + [quantity(s["metrics"][TTFT_P95]) for s in rec.since(t0)
                              if TTFT_P95 in s["metrics"]])
            assert peak_avg > 800, rec.summary(t0)  # milliseconds, not seconds
            assert load.http_errors == 0, load.last_error
        # The heavy load ends; light traffic goes on, round-robin so that every replica keeps
        # answering some requests and the HPA sees the light-load TTFT itself (an idle
        # replica would report 0, which says nothing about TTFT under load).
        with ClosedLoopLoad(lambda: addresses(c, ns, name), "ttft-model", concurrency=1,
                            name="ttft-light", spread="round-robin") as light:
            c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] == 1,
                       "the HPA to scale down once TTFT is back to 150 ms", 120)
            # Once the queued requests left the window, the HPA sees exactly the p95 of
            # unqueued requests (all in one bucket).
            want = p95_of_constant(0.15)
            c.wait_for(lambda: abs((hpa_average(c.hpa(ns, name), TTFT_P95) or 0) - want) <= 1,
                       f"the HPA to see the light-load TTFT ({want} ms)", 60)
            # Only requests cut off by a replica being removed may fail.
            assert light.http_errors == 0, light.last_error
    finally:
        rec.stop()
        print(rec.summary(t0))


# --- d. a dead metrics endpoint is missing, not zero ----------------------------------------

def test_d_dead_metrics_endpoint_is_missing_not_zero(cluster: Cluster):
    c, ns, name = cluster, "e2e-missing", "vllm"
    # 3 replicas at exactly the target (2 waiting each, target 2): the HPA holds 3. If the
    # dead pod counted as 0, the mean would drop to 4/3 and the HPA would go to 2.
    addrs = steady_synthetic_fleet(c, ns, name, 3, waiting=2)
    c.create_hpa(ns, name, name, WAITING, "2", min_replicas=1, max_replicas=6,
                 scale_down_window=4)
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    try:
        c.wait_for(lambda: hpa_average(c.hpa(ns, name), WAITING) == 2
                   and (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
                   == "True", "the HPA to see 2 waiting per pod", 60)
        pods = running_pods(c, ns, name)
        victim = pods[0]
        victim_addr = c.fleet.sim_address(ns, victim)
        assert victim_addr in addrs
        t_fault = time.monotonic()
        metrics_down(victim_addr)

        # The adapter drops the pod from its answers (stale after a few missed scrapes).
        c.wait_for(lambda: victim not in pod_values(c, ns, WAITING),
                   "the adapter to leave the dead pod out", 30)
        values = pod_values(c, ns, WAITING)
        assert values == {p: 2 for p in pods if p != victim}, values
        rc, out = c.get_raw_status(f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/{victim}/{WAITING}")
        assert rc != 0 and ("NotFound" in out or "not found" in out.lower()), out
        # The Deployment's sum covers the two live pods only (4, not 4 + 0 over 3 pods).
        dep = c.get_raw(f"{CUSTOM}/v1beta2/namespaces/{ns}/deployments.apps/{name}/{WAITING}")
        assert single_value(dep) == 4

        # Hold the fault well past the scale-down window and several HPA syncs.
        time.sleep(20)
        faulted = rec.since(t_fault)
        assert faulted, "no HPA samples recorded"
        assert all(s["spec"] == 3 for s in faulted), rec.summary(t_fault)
        assert all(s["desired"] in (None, 3) for s in faulted), rec.summary(t_fault)
        h = c.hpa(ns, name)
        assert hpa_average(h, WAITING) == 2, h["status"]  # the mean over the pods it has
        assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)

        metrics_up(victim_addr)
        c.wait_for(lambda: pod_values(c, ns, WAITING).get(victim) == 2,
                   "the pod to come back once its endpoint answers", 30)

        # A replica that is not Ready (its /metrics answering fine) is missing too.
        unready = pods[1]
        t_unready = time.monotonic()
        c.api.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{unready}",
                      {"metadata": {"annotations": {HOLD_UNREADY_ANNOTATION: "true"}}},
                      content_type="application/merge-patch+json")
        c.wait_for(lambda: unready not in pod_values(c, ns, WAITING),
                   "the adapter to leave the unready pod out", 30)
        assert pod_values(c, ns, WAITING) == {p: 2 for p in pods if p != unready}
        time.sleep(10)
        assert all(s["spec"] == 3 and s["desired"] in (None, 3)
                   for s in rec.since(t_unready)), rec.summary(t_unready)
        c.api.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{unready}",
                      {"metadata": {"annotations": {HOLD_UNREADY_ANNOTATION: None}}},
                      content_type="application/merge-patch+json")
        c.wait_for(lambda: pod_values(c, ns, WAITING).get(unready) == 2,
                   "the pod to come back once Ready", 30)
        assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)
    finally:
        rec.stop()
        print(rec.summary())


# --- e. refusals ----------------------------------------------------------------------------

def test_e_refusals_through_aggregator_and_direct(cluster: Cluster):
    c, ns = cluster, "e2e-refuse"
    steady_synthetic_fleet(c, ns, "vllm", 1, waiting=1)
    good = f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{WAITING}"
    c.wait_for(lambda: pod_values(c, ns, WAITING), "a value to refuse", 30)
    p = c.pki

    # Through the aggregator (kube-apiserver -> front proxy -> adapter).
    rc, out = c.get_raw_status(good, as_user="nobody")
    assert rc != 0 and "forbidden" in out.lower() and '"nobody"' in out, out
    rc, out = c.get_raw_status(good, kubeconfig="nobody")
    assert rc != 0 and "forbidden" in out.lower() and "nobody" in out, out

    bad_requests = {
        # path -> (HTTP status, words the Status message must hold)
        f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/no_such_metric": (404, "no_such_metric"),
        f"{CUSTOM}/v1beta1/namespaces/{ns}/pods/*/no_such_metric": (404, "no_such_metric"),
        f"{EXTERNAL}/namespaces/{ns}/no_such_metric": (404, "no_such_metric"),
        f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{WAITING}?labelSelector=%3D%3D%3Dx": (
            400, ""),
        f"{EXTERNAL}/namespaces/{ns}/{WAITING}?labelSelector=model_name%3D%3D%3D": (400, ""),
        f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{WAITING}?metricLabelSelector=%3D%3D": (
            400, ""),
        f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/no-such-pod/{WAITING}": (404, "no-such-pod"),
    }
    admin_api = c.api
    for path, (status, words) in bad_requests.items():
        # Via the aggregator, with kubectl and with a plain HTTPS client (exact status).
        rc, out = c.get_raw_status(path)
        assert rc != 0, (path, out)
        code, body = admin_api.raw("GET", path)
        assert code == status, (path, code, body)
        doc = json.loads(body)
        assert doc["kind"] == "Status" and doc["code"] == status, doc
        assert words in doc.get("message", ""), doc
    # Writes: the metrics APIs are read-only (405 MethodNotAllowed from the adapter).
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        code, body = admin_api.raw(method, f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/x/{WAITING}",
                                   b"{}", {"Content-Type": "application/json"})
        assert code == 405, (method, code, body)

    # Directly to the adapter, as the aggregator would but with other credentials.
    def direct(cert=None, headers=None, ca="default", path=good):
        return c.adapter_direct(cert=cert, ca=ca).raw("GET", path, headers=headers)

    code, body = direct()
    assert code == 401, (code, body)
    code, body = direct(p.admin)
    assert code == 200, (code, body)  # positive control: a cluster-CA user with RBAC
    code, body = direct(p.nobody)
    assert code == 403 and b"nobody" in body, (code, body)
    # Request headers are only believed from the front proxy's certificate.
    code, body = direct(p.nobody, {"X-Remote-User": "e2e-admin",
                                   "X-Remote-Group": "system:masters"})
    assert code == 403 and b"nobody" in body, (code, body)
    code, body = direct(p.front_proxy_client, {"X-Remote-User": "nobody"})
    assert code == 403 and b"nobody" in body, (code, body)  # the adapter's own SAR
    code, body = direct(p.front_proxy_client, {"X-Remote-User": "e2e-admin",
                                               "X-Remote-Group": "system:masters"})
    assert code == 200, (code, body)
    # A front-proxy-CA certificate whose CN is not an allowed name: headers ignored, 401.
    code, body = direct(p.front_proxy_evil, {"X-Remote-User": "e2e-admin",
                                             "X-Remote-Group": "system:masters"})
    assert code == 401, (code, body)
    # A client certificate from a CA nobody trusts: the handshake fails, or 401.
    try:
        code, body = direct(p.untrusted_client)
        assert code == 401, (code, body)
    except (ssl.SSLError, ConnectionError) as e:
        print(f"untrusted client certificate refused in the handshake: {e}")
    # Bearer tokens: garbage -> 401; a real service account without RBAC -> 403; the HPA's
    # own service account -> 200.
    code, body = direct(headers={"Authorization": "Bearer not-a-token"})
    assert code == 401, (code, body)
    c.api.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "no-rights", "namespace": ns}})
    token = c.api.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/no-rights/token",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                           "spec": {"expirationSeconds": 600}})["status"]["token"]
    code, body = direct(headers={"Authorization": f"Bearer {token}"})
    assert code == 403 and b"no-rights" in body, (code, body)
    hpa_token = c.api.request(
        "POST", "/api/v1/namespaces/kube-system/serviceaccounts/horizontal-pod-autoscaler/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 600}})["status"]["token"]
    code, body = direct(headers={"Authorization": f"Bearer {hpa_token}"})
    assert code == 200, (code, body)
    # The same bad requests, straight to the adapter as an authorized user.
    for path, (status, words) in bad_requests.items():
        code, body = direct(p.admin, path=path)
        assert code == status, (path, code, body)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        code, body = c.adapter_direct(cert=p.admin).raw(
            method, f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/x/{WAITING}", b"{}",
            {"Content-Type": "application/json"})
        assert code == 405, (method, code, body)
    # The serving certificate is for the Service name; a client checking another name fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        Kube("127.0.0.1", c.ports["adapter"], ssl_context(p.adapter_ca.cert),
             server_hostname="evil.example").raw("GET", "/readyz")


# --- f. adapter restart ---------------------------------------------------------------------

def test_f_adapter_restart_no_wrong_decision(cluster: Cluster):
    c, ns = cluster, "e2e-restart"
    # Two fleets at exactly their targets: queue depth (2 waiting each, target 2) and TTFT
    # (synthetic 300 ms observations: p95 = 487.5 ms by vLLM's buckets, target 500).
    steady_synthetic_fleet(c, ns, "queue", 3, waiting=2)
    steady_synthetic_fleet(c, ns, "ttft", 3, ttft_seconds=0.3, observations_per_second=5)
    ttft_expected = p95_of_constant(0.3)
    c.create_hpa(ns, "queue", "queue", WAITING, "2", max_replicas=6, scale_down_window=4)
    c.create_hpa(ns, "ttft", "ttft", TTFT_P95, "500", max_replicas=6, scale_down_window=4)
    recs = {n: HpaRecorder(c, ns, n, n) for n in ("queue", "ttft")}
    for r in recs.values():
        r.start()
    try:
        c.wait_for(lambda: hpa_average(c.hpa(ns, "queue"), WAITING) == 2
                   and hpa_average(c.hpa(ns, "ttft"), TTFT_P95) == ttft_expected,
                   "both HPAs at their targets", 60)
        t_stop = time.monotonic()
        c.stop_adapter()
        # The HPAs notice: the metrics API is gone, they must hold, not guess.
        c.wait_for(lambda: all((condition(c.hpa(ns, n), "ScalingActive") or {}).get("status")
                               == "False" for n in recs),
                   "the HPAs to report ScalingActive=False while the adapter is down", 30)
        time.sleep(4)
        t_start = time.monotonic()
        c.start_adapter(wait=True)
        c.wait_adapter_available(timeout=90)
        c.wait_for(lambda: all((condition(c.hpa(ns, n), "ScalingActive") or {}).get("status")
                               == "True" for n in recs),
                   "the HPAs to recover after the restart", 60)
        t_recovered = time.monotonic()
        # Watch a while after recovery: the first answers of a restarted adapter (one scrape,
        # an empty window) must not move either HPA.
        time.sleep(15)
        for n, r in recs.items():
            samples = r.since(t_stop)
            assert samples, f"no HPA samples recorded for {n}"
            assert all(s["spec"] == 3 for s in samples), (n, r.summary(t_stop))
            assert all(s["desired"] == 3 for s in samples), (n, r.summary(t_stop))
            assert rescale_events(c, ns, n) == [], rescale_events(c, ns, n)
        assert hpa_average(c.hpa(ns, "queue"), WAITING) == 2
        assert hpa_average(c.hpa(ns, "ttft"), TTFT_P95) == ttft_expected
        print(f"adapter down {t_start - t_stop:.1f}s, HPAs recovered "
              f"{t_recovered - t_start:.1f}s after restart")
    finally:
        for n, r in recs.items():
            r.stop()
            print(f"--- {n}\n{r.summary()}")
        if c.adapter is None:  # keep the session usable if the test failed mid-way
            try:
                c.start_adapter(wait=True)
            except HarnessError as e:
                print(e)
