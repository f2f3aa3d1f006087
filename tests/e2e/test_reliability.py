"""End-to-end reliability (issue 8) on the real control plane, next to ``test_e2e.py``:

g. the guide's two-metric HPA (Pods ``vllm_num_requests_waiting`` AverageValue 5 and
   ``vllm_time_to_first_token_p95`` AverageValue 500, minReplicas 2) computes from its first
   sync on an idle fleet, scales up under load and back down to its minimum once the load
   stops (an idle replica's TTFT is 0, not missing, so the HPA never goes invalid);
h. readiness: a pod that stays Pending (it asks for more GPUs than any node has) and a pod
   Evicted (phase Failed) and left in the API hold neither a running nor a restarted adapter
   unready: it stays Ready, the APIServices stay Available and the HPA keeps computing;
i. the fault suite: one fleet at exactly its HPA's target, one replica's ``/metrics`` (or its
   node's dcgm-exporter) plays each fault of vllm-sim's admin API in turn. Per scenario the
   HPA must hold (a fabricated 0 for the faulty replica would scale it down), the faulty
   replica's value must be missing — never 0, never another value — or, for faults that
   spoil only a histogram, kept, and the other replicas' values must stay. The table it
   prints (and writes to ``$INFERSCALE_FAULT_TABLE`` when set) is docs/fault-suite.md's;
l. kube-apiserver restarted under an HPA at its target: the adapter stays up, ready and live
   through the outage, its pod watches resume (a pod deleted before they do is dropped, its
   replacement served: no ghost, none lost), the aggregator serves again and the HPA computes
   a fresh value without moving;
m. two adapter replicas behind the Service, one SIGKILLed while an HPA and a reader read
   through the aggregator: reads fail only until its endpoint leaves the ready set, the
   APIServices stay Available and the HPA holds;
n. the same, the replica SIGTERMed as its pod's deletion does: not one read through the
   aggregator fails, a client on the replica itself is answered until the listener closes
   after the shutdown delay, and it exits 0 within its delay and drain.

Around the whole module (a): a scrape-labelled pod that cannot be scheduled stays Pending from
the module's start to its end (minutes: the module runs well over 2 minutes, so this adds no
waiting of its own), beside a small fleet with its HPA at its target. A prober samples every
second: the pod still the same Pending, unscheduled pod; the adapter's /readyz 200; the
APIServices Available; the HPA computing 2 per pod and wanting 2; the fleet's values exactly
2. Only a test's declared disruption (``disrupts``: h restarts the adapter, l kube-apiserver,
m kills a replica the aggregator routes to) pauses the checks it makes impossible.

The HPA windows are shortened from the guide's (scale-down stabilisation 300 s there, 10 s
here) so a scale-down happens within a test's patience; the metrics and targets are the
guide's.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import pytest

from .cluster import (ADAPTER_HOST, DCGM_NAMESPACE, REPLICA_EXIT_POLL_SECONDS, AdapterReplica,
                      Cluster)
from .load import ClosedLoopLoad, post_json, set_synthetic_load
from .test_e2e import (CUSTOM, TTFT_P95, WAITING, HpaRecorder, addresses, condition,
                       hpa_average, p95_of_constant, rescale_events, running_pods,
                       steady_synthetic_fleet, wait_fleet)
from .kube import KubeError, quantity

GPUS = "inferscale_gpus"
RPS = "inferscale_requests_per_second"


def values(c: Cluster, ns: str, metric: str) -> dict[str, float]:
    """pods/* of ``metric`` through the aggregator (a plain HTTPS client: fast enough to poll
    every half second): pod name -> value."""
    doc = c.api.get(f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{metric}")
    return {i["describedObject"]["name"]: quantity(i["value"]) for i in doc["items"]}


def set_fault(addr: str, fault: dict) -> None:
    status, data = post_json(addr, "/admin/fault", fault)
    assert status // 100 == 2, (addr, fault, status, data[:200])


# --- a. a pod Pending for minutes, around the whole module -----------------------------------

LONG_PENDING_NS = "e2e-pending-minutes"
# The claim: Pending "for minutes" while the adapter answers. Checked when the whole module
# ran under one fixture instance (a -k selection of some tests checks the rest, not this).
LONG_PENDING_MIN_SECONDS = 120.0
PROBE_SECONDS = 1.0
# After a declared disruption ends, the adapter's next scrape round and the HPA's next sync
# (every 2 s here) come on a loaded 2-core machine: the value checks wait this long.
AFTER_DISRUPTION_GRACE_SECONDS = 10.0
# What a disruption makes impossible to check: "adapter" (the session adapter is stopped:
# no /readyz, no reads through it), "api" (kube-apiserver is down: nothing read through it),
# "aggregated" (a replica the aggregator may route to is killed: reads can fail until its
# endpoint leaves, the HPA may skip a sync).
PAUSES = {"adapter": {"readyz", "aggregated", "apiservice"},
          "api": {"api", "aggregated", "apiservice"},
          "aggregated": {"aggregated"}}


class LongPending(threading.Thread):
    """The prober of (a): one sample a second of everything the adapter must keep doing
    while a pod stays Pending; ``problems`` lists every sample that broke a promise."""

    def __init__(self, c: Cluster, pending_uid: str, fleet: list[str]):
        super().__init__(daemon=True)
        self.c, self.uid, self.fleet = c, pending_uid, fleet
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.paused: dict[str, int] = {}
        self.resumed_at = 0.0
        self.paused_seconds = 0.0
        self.problems: list[str] = []
        self.samples = 0
        self.readyz_ok = 0
        self.pending_seen: list[float] = []
        self.hpa_seen = 0
        self.current_test = ""
        self.direct = c.adapter_direct()

    @contextlib.contextmanager
    def pause(self, what: str):
        with self.lock:
            self.paused[what] = self.paused.get(what, 0) + 1
        t0 = time.monotonic()
        try:
            yield
        finally:
            with self.lock:
                self.paused[what] -= 1
                self.resumed_at = time.monotonic()
                self.paused_seconds += self.resumed_at - t0

    def run(self) -> None:
        while not self.halt.wait(PROBE_SECONDS):
            self.sample()

    def sample(self) -> None:
        with self.lock:
            off = set().union(*(PAUSES[w] for w, n in self.paused.items() if n))
            settling = time.monotonic() - self.resumed_at < AFTER_DISRUPTION_GRACE_SECONDS
        if settling:
            off |= {"aggregated"}
        bad: list[str] = []
        if "readyz" not in off:
            try:
                code, body = self.direct.raw("GET", "/readyz")
            except OSError as e:
                code, body = 0, str(e).encode()
            if code == 200:
                self.readyz_ok += 1
            else:
                bad.append(f"/readyz {code} {body[:120]!r}")
        c, ns = self.c, LONG_PENDING_NS
        if "api" not in off:
            try:
                pods = [p for p in c.pods(ns, "app.kubernetes.io/name=starved")
                        if not p["metadata"].get("deletionTimestamp")]
                hpa = c.hpa(ns, "fleet")
            except (KubeError, OSError) as e:
                bad.append(f"API read failed: {e}"[:200])
            else:
                if ([p["metadata"]["uid"] for p in pods] != [self.uid]
                        or pods[0]["status"].get("phase") != "Pending"
                        or pods[0]["spec"].get("nodeName")):
                    bad.append("the starved pod is not the same unscheduled Pending pod: "
                               + str([(p["metadata"]["uid"], p["status"].get("phase"),
                                       p["spec"].get("nodeName")) for p in pods]))
                else:
                    self.pending_seen.append(time.monotonic())
                # Whatever happens, the HPA never moves (its values are at the target).
                desired = hpa.get("status", {}).get("desiredReplicas")
                active = (condition(hpa, "ScalingActive") or {}).get("status")
                if active == "True":
                    self.hpa_seen += 1
                if self.hpa_seen and desired != 2:
                    bad.append(f"HPA wants {desired}")
                if self.hpa_seen and "aggregated" not in off and (
                        active != "True" or hpa_average(hpa, WAITING) != 2):
                    bad.append(f"HPA not computing 2 per pod: ScalingActive {active}, "
                               f"average {hpa_average(hpa, WAITING)}")
        if "aggregated" not in off:
            try:
                served = values(c, ns, WAITING)
            except (KubeError, OSError) as e:
                bad.append(f"aggregated read failed: {e}"[:200])
            else:
                if served != {p: 2 for p in self.fleet}:
                    bad.append(f"values {served}")
        if "apiservice" not in off:
            try:
                bad += [f"{n} {v}" for n, v in c.apiservice_conditions().items()
                        if not v.startswith("True")]
            except (KubeError, OSError) as e:
                bad.append(f"APIService read failed: {e}"[:200])
        self.samples += 1
        if bad:
            self.problems.append(f"{self.current_test}: " + "; ".join(bad))


_LONG_PENDING: LongPending | None = None


@contextlib.contextmanager
def disrupts(what: str):
    """Declares that the test deliberately takes down what ``PAUSES[what]`` needs."""
    prober = _LONG_PENDING
    if prober is None:
        yield
        return
    with prober.pause(what):
        yield


@pytest.fixture(scope="module", autouse=True)
def pending_for_minutes(request, cluster: Cluster):
    """(a) A pod Pending for minutes while the adapter answers (see the module docs)."""
    global _LONG_PENDING
    c, ns = cluster, LONG_PENDING_NS
    t_setup = time.monotonic()
    fleet_addrs = steady_synthetic_fleet(c, ns, "fleet", 2, waiting=2)
    assert len(fleet_addrs) == 2
    fleet = running_pods(c, ns, "fleet")
    c.create_hpa(ns, "fleet", "fleet", WAITING, "2", min_replicas=2, max_replicas=4,
                 scale_down_window=10)
    # More GPUs than any node has: unschedulable, Pending until deleted.
    c.create_deployment(ns, "starved", replicas=1, model="starved-model", gpus=64)
    pod = c.wait_for(lambda: (c.pods(ns, "app.kubernetes.io/name=starved") or [None])[0],
                     "the starved pod", 20, interval=0.2)
    t_created = time.monotonic()
    setup_s = t_created - t_setup
    prober = LongPending(c, pod["metadata"]["uid"], fleet)
    prober.start()
    _LONG_PENDING = prober
    ran: list[str] = []
    request.module.long_pending_ran = ran
    try:
        yield prober
    finally:
        _LONG_PENDING = None
        prober.halt.set()
        prober.join(timeout=10)
        prober.sample()  # the last look, at the module's end
        lived = time.monotonic() - t_created
        final = c.pods(ns, "app.kubernetes.io/name=starved")
        t_teardown = time.monotonic()
        c.clear_namespace(ns)
        teardown_s = time.monotonic() - t_teardown
    selected = [i.name for i in request.session.items if i.module is request.module]
    defined = [n for n in dir(request.module) if n.startswith("test_")]
    whole = sorted(ran) == sorted(defined) == sorted(selected)
    gaps = [b - a for a, b in zip(prober.pending_seen, prober.pending_seen[1:])]
    print(f"\n(a) pod Pending for {lived:.0f}s (to the module's end; {len(ran)} tests): "
          f"{prober.samples} samples, /readyz 200 in {prober.readyz_ok}, seen Pending in "
          f"{len(prober.pending_seen)} (longest gap {max(gaps, default=0):.1f}s), HPA computing "
          f"in {prober.hpa_seen}; checks paused {prober.paused_seconds:.0f}s by declared "
          f"disruptions; {len(prober.problems)} problems; e2e time added: setup "
          f"{setup_s:.1f}s, teardown {teardown_s:.1f}s")
    assert prober.problems == [], prober.problems[:10]
    assert len(final) == 1 and final[0]["metadata"]["uid"] == prober.uid \
        and final[0]["status"].get("phase") == "Pending", final
    assert prober.hpa_seen, "the HPA beside the Pending pod never computed"
    # One sample a second at least half the time, whatever the load.
    assert prober.samples >= lived / (2 * PROBE_SECONDS) - 5, (prober.samples, lived)
    if whole:
        assert lived >= LONG_PENDING_MIN_SECONDS, lived
        assert len(prober.pending_seen) >= LONG_PENDING_MIN_SECONDS / (2 * PROBE_SECONDS)
    else:
        print(f"(a) not the whole module ({len(ran)} of {len(defined)} tests): "
              f"Pending {lived:.0f}s, the {LONG_PENDING_MIN_SECONDS:.0f}s bound not checked")


@pytest.fixture(autouse=True)
def _which_test(request, pending_for_minutes: LongPending):
    pending_for_minutes.current_test = request.node.name
    request.module.long_pending_ran.append(request.node.originalname)
    yield
    pending_for_minutes.current_test = ""


# --- g. the guide's two-metric HPA ----------------------------------------------------------

def test_g_two_metric_hpa_idle_up_and_back_to_min(cluster: Cluster):
    c, ns, name = cluster, "e2e-two-metrics", "vllm"
    c.create_deployment(ns, name, replicas=2, model="two-model", max_num_seqs=2, ttft="150ms")
    wait_fleet(c, ns, name, 2)
    t_created = time.monotonic()
    c.create_hpa(ns, name, name, WAITING, "5", min_replicas=2, max_replicas=6,
                 scale_down_window=10, more_metrics=[(TTFT_P95, "500")])
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    try:
        # Idle fleet, no request ever sent: both metrics are 0 from the first sync (the HPA
        # syncs every 2 s here), so the HPA computes instead of going FailedGetPodsMetric.
        def computing():
            h = c.hpa(ns, name)
            active = condition(h, "ScalingActive") or {}
            if active.get("status") == "False":
                raise AssertionError(f"the HPA cannot compute on an idle fleet: {active}")
            if (active.get("status") == "True" and hpa_average(h, WAITING) == 0
                    and hpa_average(h, TTFT_P95) == 0):
                return h
            return None
        c.wait_for(computing, "the HPA to compute 0 and 0 on the idle fleet", 20)
        first_ok = time.monotonic() - t_created
        assert all(s["active"] != "False" for s in rec.samples), rec.summary()
        assert c.deployment(ns, name)["spec"]["replicas"] == 2

        # Load: 24 closed-loop clients on 2 replicas of 2 slots -> ~10 waiting per replica
        # and seconds of queueing before the first token: both metrics ask for more.
        t_load = time.monotonic()
        with ClosedLoopLoad(lambda: addresses(c, ns, name), "two-model", concurrency=24,
                            name="two") as load:
            c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] >= 4,
                       "the HPA to scale up under load", 90)
            t_up = time.monotonic()
            assert load.http_errors == 0, load.last_error
        peak = max(s["spec"] for s in rec.since(t_load))
        t_stop = time.monotonic()
        # Load stopped: nothing waits at once; the queued TTFTs leave the 20 s window, the
        # replicas turn idle (TTFT 0) and the HPA returns to its minimum.
        c.wait_for(lambda: c.deployment(ns, name)["spec"]["replicas"] == 2,
                   "the HPA to scale back down to minReplicas 2 after the load", 120)
        t_down = time.monotonic()
        h = c.wait_for(lambda: (lambda h: h if hpa_average(h, TTFT_P95) == 0
                                and hpa_average(h, WAITING) == 0 else None)(c.hpa(ns, name)),
                       "the HPA to read the idle fleet (0 waiting, TTFT 0)", 30)
        assert condition(h, "ScalingActive")["status"] == "True", h["status"]
        # Never invalid, from creation to the end: no sync lost a metric.
        assert all(s["active"] != "False" for s in rec.samples), rec.summary()
        assert all(s["spec"] <= 6 for s in rec.samples), rec.summary()
        assert peak >= 4, rec.summary()
        c.wait_for(lambda: any("below target" in m for m in rescale_events(c, ns, name)),
                   "the scale-down event", 15)
        print(f"two-metric HPA: computing {first_ok:.1f}s after creation on an idle fleet; "
              f"scaled up to {peak} {t_up - t_load:.1f}s into the load; back to 2 "
              f"{t_down - t_stop:.1f}s after it stopped")
    finally:
        rec.stop()
        print(rec.summary())


# --- h. readiness with Pending and Evicted pods ---------------------------------------------

def test_h_readiness_ignores_pending_and_evicted_pods(cluster: Cluster):
    c, ns, name = cluster, "e2e-readiness", "vllm"
    steady_synthetic_fleet(c, ns, name, 2, waiting=2)
    c.create_hpa(ns, name, name, WAITING, "2", min_replicas=2, max_replicas=4,
                 scale_down_window=10)
    # A scrape-labelled pod waiting for a GPU node that never comes: Pending for the whole
    # test (~35 s here, adapter restart included; in a cluster, minutes while a node is
    # provisioned).
    c.create_deployment(ns, "starved", replicas=1, model="starved-model", gpus=64)
    t_pending = time.monotonic()
    c.wait_for(lambda: (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
               == "True", "the HPA to compute", 60)

    # Evict one replica: phase Failed, reason Evicted, left in the API (the ReplicaSet
    # replaces it; nothing deletes it).
    victim = running_pods(c, ns, name)[0]
    c.api.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{victim}/status",
                  {"status": {"phase": "Failed", "reason": "Evicted",
                              "message": "The node was low on resource: memory.",
                              "conditions": [{"type": "Ready", "status": "False"}]}},
                  content_type="application/strategic-merge-patch+json")
    replacement = c.wait_for(
        lambda: (lambda ps: ps if len(ps) == 2 and victim not in ps else None)(
            running_pods(c, ns, name, ready=True)),
        "the ReplicaSet to replace the evicted pod", 30)
    for p in replacement:
        addr = c.fleet.sim_address(ns, p)
        if addr:
            set_synthetic_load(addr, waiting=2)
    starved = [p for p in c.pods(ns, "app.kubernetes.io/name=starved")]
    assert len(starved) == 1 and starved[0]["status"].get("phase") == "Pending", starved

    def probe_all(seconds: float, what: str) -> list[str]:
        """Polls /readyz and the APIServices for ``seconds``; returns every failure seen."""
        bad = []
        direct = c.adapter_direct()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            code, body = direct.raw("GET", "/readyz")
            if code != 200:
                bad.append(f"{what}: /readyz {code} {body[:120]!r}")
            conds = c.apiservice_conditions()
            bad += [f"{what}: {n} {v}" for n, v in conds.items() if not v.startswith("True")]
            time.sleep(0.5)
        return bad

    # The running adapter: stays ready.
    assert probe_all(8, "running") == []
    # A restarted adapter with both pods in the API: ready as soon as its watches listed and
    # its first round ran (grace: interval + timeout + 2 s), then ready throughout.
    with disrupts("adapter"):
        c.stop_adapter()
        t_start = time.monotonic()
        c.start_adapter(wait=True)
        ready_after = time.monotonic() - t_start
        assert ready_after < 15, ready_after
        c.wait_adapter_available(timeout=60)
    failures = probe_all(15, "restarted")
    assert failures == [], failures
    c.wait_for(lambda: (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
               == "True" and hpa_average(c.hpa(ns, name), WAITING) == 2,
               "the HPA to compute 2 per pod again", 30)
    served = values(c, ns, WAITING)
    assert set(served) == set(replacement), (served, replacement)
    assert served == {p: 2 for p in replacement}, served
    code, _ = c.api.raw("GET", f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/{victim}/{WAITING}")
    assert code == 404, code
    starved = c.pods(ns, "app.kubernetes.io/name=starved")
    assert starved[0]["status"].get("phase") == "Pending", starved
    evicted = next(p for p in c.pods(ns) if p["metadata"]["name"] == victim)
    assert evicted["status"]["phase"] == "Failed", evicted["status"]
    print(f"restarted adapter Ready {ready_after:.1f}s after start with a pod Pending for "
          f"{time.monotonic() - t_pending:.0f}s and an Evicted pod in the API")


# --- i. the fault suite ---------------------------------------------------------------------

# Each scenario: (id, issue 8 letter, the fault, what the faulty replica's queue value must
# be while it plays: "missing" or "kept"). A neutral fault ends each one (a reset would also
# clear the synthetic load): the real body padded to 256 KiB with comments, a valid scrape.
NEUTRAL = {"fault": "oversized", "bytes": 256 * 1024}
SCENARIOS = [
    ("restart", "c", {"admin": "/admin/restart"}, "kept"),
    ("hang", "d", {"fault": "hang", "seconds": 5}, "missing"),
    ("status-500", "e", {"fault": "status", "code": 500}, "missing"),
    ("html", "f", {"fault": "html"}, "missing"),
    ("garbage", "f", {"fault": "garbage", "bytes": 65536}, "missing"),
    ("oversized", "g", {"fault": "oversized", "bytes": 24 << 20}, "missing"),
    ("gzip-bomb", "h", {"fault": "gzip_bomb", "decoded_bytes": 1 << 30}, "missing"),
    ("non-finite-gauges", "i", {"fault": "non_finite_gauges"}, "missing"),
    ("non-monotone-buckets", "i", {"fault": "non_monotone_buckets"}, "kept"),
    ("no-inf-bucket", "i", {"fault": "no_inf_bucket"}, "kept"),
    ("duplicate-series", "j", {"fault": "duplicate_series"}, "missing-or-kept"),
    ("redirect", "7", {"fault": "redirect", "location": None}, "missing"),
    ("dcgm-gone", "k", {"dcgm": {"fault": "gone", "seconds": 12}}, "kept"),
]
# How long each fault is held once it shows (HPA syncs every 2 s, scale-down window 6 s: a
# fabricated value held this long would move the HPA).
HOLD_SECONDS = 8


def test_i_fault_suite(cluster: Cluster):
    c, ns, name = cluster, "e2e-faults", "vllm"
    # 3 replicas at exactly the target (2 waiting each, target 2), with synthetic 300 ms
    # first tokens so every replica has a TTFT p95 (487.5 ms by vLLM's buckets) and counters.
    addrs = steady_synthetic_fleet(c, ns, name, 3, waiting=2, ttft_seconds=0.3,
                                   observations_per_second=5)
    ttft_expected = p95_of_constant(0.3)
    c.create_hpa(ns, name, name, WAITING, "2", min_replicas=1, max_replicas=6,
                 scale_down_window=6)
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    pods = running_pods(c, ns, name)
    addr_of = {p: c.fleet.sim_address(ns, p) for p in pods}
    assert sorted(addr_of.values()) == sorted(addrs)
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in c.pods(ns)}
    table: list[str] = []
    failures: list[str] = []
    try:
        c.wait_for(lambda: hpa_average(c.hpa(ns, name), WAITING) == 2
                   and (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
                   == "True", "the HPA to see 2 waiting per pod", 60)
        for i, (sid, letter, fault, expect) in enumerate(SCENARIOS):
            victim = pods[i % len(pods)]
            others = [p for p in pods if p != victim]
            addr = addr_of[victim]
            row, problems = _play(c, ns, name, rec, sid, fault, expect, victim, others, addr,
                                  addr_of, node_of, ttft_expected)
            table.append(f"| ({letter}) {sid} | {row['hpa']} | {row['victim']} | "
                         f"{row['others']} |")
            failures += [f"{sid}: {p}" for p in problems]
        assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)
    finally:
        rec.stop()
        text = ("| scenario | what the HPA did | faulty replica's values | other replicas |\n"
                "|---|---|---|---|\n" + "\n".join(table))
        print("\n" + text)
        out = os.environ.get("INFERSCALE_FAULT_TABLE")
        if out:
            with open(out, "w") as f:
                f.write(text + "\n")
    assert not failures, "\n".join(failures) + "\n" + rec.summary()


def _play(c, ns, name, rec, sid, fault, expect, victim, others, addr, addr_of, node_of,
          ttft_expected):
    """Plays one scenario; returns its table row and the problems seen."""
    problems: list[str] = []
    seen_victim: set[str] = set()
    seen_ttft: set[str] = set()
    seen_other: set[str] = set()
    min_rps = [0.0]
    dcgm_addr = None
    t0 = time.monotonic()
    if "admin" in fault:
        status, data = post_json(addr, fault["admin"], {})
        assert status // 100 == 2, (status, data)
    elif "dcgm" in fault:
        dcgm_pod = f"nvidia-dcgm-exporter-{node_of[victim]}"
        dcgm_addr = c.fleet.sim_address(DCGM_NAMESPACE, dcgm_pod)
        assert dcgm_addr, dcgm_pod
        set_fault(dcgm_addr, fault["dcgm"])
    elif fault.get("fault") == "redirect":
        # To another replica's /metrics: its values must not become the victim's.
        set_fault(addr, {**fault, "location": f"http://{addr_of[others[0]]}/metrics"})
    else:
        set_fault(addr, fault)

    seen_gpus: set[str] = set()
    on_node = [p for p in [victim, *others] if node_of[p] == node_of[victim]]

    def observe() -> float | None:
        """One look at what the adapter serves; records it and any fabricated value.
        Returns the victim's queue value (for dcgm-gone: 1 while its GPUs are served)."""
        waiting = values(c, ns, WAITING)
        ttft = values(c, ns, TTFT_P95)
        v = waiting.get(victim)
        seen_victim.add("missing" if v is None else f"{v:g}")
        t = ttft.get(victim)
        seen_ttft.add("missing" if t is None else f"{t:g}")
        for p in others:
            seen_other.add("missing" if p not in waiting else f"{waiting[p]:g}")
        if v is not None and v != 2:
            problems.append(f"the faulty replica served {v} waiting (fabricated)")
        if t is not None and abs(t - ttft_expected) > 0.5:
            problems.append(f"the faulty replica served TTFT p95 {t} (expected "
                            f"{ttft_expected} or missing)")
        for p in others:
            if waiting.get(p) != 2:
                problems.append(f"{p} (healthy) served {waiting.get(p)} waiting")
        rps = values(c, ns, RPS)
        if rps:
            min_rps[0] = min(min_rps[0], min(rps.values()))
        if dcgm_addr:
            gpus = values(c, ns, GPUS)
            seen_gpus.add(",".join("missing" if p not in gpus else f"{gpus[p]:g}"
                                   for p in on_node))
            if any(g != 1 for g in gpus.values()):
                problems.append(f"inferscale_gpus fabricated: {gpus}")
            for p in others:
                if node_of[p] != node_of[victim] and p not in gpus:
                    problems.append(f"{p}'s GPUs (another node) went missing")
            return 1.0 if any(p in gpus for p in on_node) else None
        return v

    # Wait for the fault to show (the victim's value missing; for faults that keep it, a few
    # scrapes), then hold it while the HPA syncs.
    wants_missing = expect == "missing" or dcgm_addr is not None
    deadline = time.monotonic() + 15
    shown_at = None
    while time.monotonic() < deadline:
        v = observe()
        if wants_missing and v is None:
            shown_at = time.monotonic()
            break
        if not wants_missing and time.monotonic() - t0 > 3:
            shown_at = time.monotonic()
            break
        time.sleep(0.5)
    if shown_at is None:
        problems.append(f"the fault did not show within 15 s (victim: {sorted(seen_victim)})")
        shown_at = time.monotonic()
    while time.monotonic() - shown_at < HOLD_SECONDS:
        v = observe()
        if dcgm_addr:
            if v is not None and time.monotonic() - t0 < 10:
                problems.append("GPUs served while the node's exporter was gone")
        elif expect == "missing" and v is None:
            pass
        elif expect == "missing":
            problems.append(f"the faulty replica came back while faulty: {v}")
        elif expect == "kept" and v is None:
            problems.append("the faulty replica's queue value was lost")
        time.sleep(0.5)
    samples = rec.since(t0)
    held = all(s["spec"] == 3 for s in samples) and all(s["desired"] in (None, 3)
                                                        for s in samples)
    active = sorted({f"{s['active']}" for s in samples})
    if not held:
        problems.append("the HPA moved: " + rec.summary(t0))
    if min_rps[0] < 0:
        problems.append(f"a negative request rate was served: {min_rps[0]}")

    # End the fault and wait for the replica to be whole again.
    if dcgm_addr:
        c.wait_for(lambda: victim in values(c, ns, GPUS), "the GPUs to come back", 30)
    elif "admin" not in fault:
        set_fault(addr, NEUTRAL)
    c.wait_for(lambda: values(c, ns, WAITING).get(victim) == 2,
               f"{victim} to be served again after {sid}", 30)
    row = {
        "hpa": ("held 3 replicas" if held else "MOVED") + f" (ScalingActive {'/'.join(active)})",
        "victim": (f"waiting {'/'.join(sorted(seen_victim))}; TTFT "
                   f"{'/'.join(sorted(seen_ttft))}"
                   + (f"; GPUs of its node's pods {'/'.join(sorted(seen_gpus))}"
                      if seen_gpus else "")),
        "others": f"waiting {'/'.join(sorted(seen_other))}",
    }
    return row, problems


# --- helpers for l, m, n --------------------------------------------------------------------

def adapter_counter(c: Cluster, metric: str, host: str = ADAPTER_HOST,
                    route_prefix: str = "") -> float:
    """The sum of the adapter's own counter ``metric`` (its /metrics, read with the admin
    client certificate), over series whose ``route`` label starts with ``route_prefix``."""
    code, body = c.adapter_direct(cert=c.pki.admin, host=host).raw("GET", "/metrics")
    assert code == 200, (host, code, body[:200])
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(metric) or line[len(metric):len(metric) + 1] not in ("{", " "):
            continue
        labels, _, value = line.rpartition(" ")
        if route_prefix and f'route="{route_prefix}' not in labels:
            continue
        total += float(value)
    return total


class AggregatedReader(threading.Thread):
    """Reads ``pods/*/vllm_num_requests_waiting`` through the aggregator in a loop, as an
    HPA does but ten times a second, and records every answer: (time, None) for the exact
    ``expected`` values, (time, what went wrong) otherwise — an error status, a connection
    failure, a missing pod or another value."""

    def __init__(self, c: Cluster, ns: str, expected: dict[str, float]):
        super().__init__(daemon=True, name=f"reader-{ns}")
        self.c, self.ns, self.expected = c, ns, expected
        self.results: list[tuple[float, str | None]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        path = f"{CUSTOM}/v1beta2/namespaces/{self.ns}/pods/*/{WAITING}"
        while not self._halt.wait(0.1):
            try:
                code, body = self.c.api.raw("GET", path)
                if code != 200:
                    problem = f"HTTP {code}: {body[:160]!r}"
                else:
                    served = {i["describedObject"]["name"]: quantity(i["value"])
                              for i in json.loads(body)["items"]}
                    problem = None if served == self.expected else f"served {served}"
            except OSError as e:
                problem = f"{type(e).__name__}: {e}"
            self.results.append((time.monotonic(), problem))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def failures(self, since: float = 0.0) -> list[tuple[float, str]]:
        return [(t, p) for t, p in self.results if p is not None and t >= since]

    def count(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t, _ in self.results if since <= t <= until)


def steady_queue_fleet_with_hpa(c: Cluster, ns: str, name: str) -> tuple[list[str], HpaRecorder]:
    """3 replicas at exactly their HPA's target (2 waiting each, target 2): a fabricated or
    lost value moves the HPA, a held one does not. Returns the pods and a started recorder,
    once the HPA computes 2."""
    steady_synthetic_fleet(c, ns, name, 3, waiting=2)
    c.create_hpa(ns, name, name, WAITING, "2", min_replicas=1, max_replicas=6,
                 scale_down_window=6)
    rec = HpaRecorder(c, ns, name, name)
    rec.start()
    c.wait_for(lambda: hpa_average(c.hpa(ns, name), WAITING) == 2
               and (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status")
               == "True", "the HPA to see 2 waiting per pod", 60)
    return running_pods(c, ns, name), rec


def held_three(rec: HpaRecorder, since: float) -> bool:
    samples = rec.since(since)
    return bool(samples) and all(s["spec"] == 3 and s["desired"] in (None, 3)
                                 for s in samples)


# --- l. kube-apiserver restarted --------------------------------------------------------------

def test_l_apiserver_restart(cluster: Cluster):
    c, ns, name = cluster, "e2e-apiserver-restart", "vllm"
    pods, rec = steady_queue_fleet_with_hpa(c, ns, name)
    # A second Deployment, no HPA: its pod is deleted as soon as the API is back, before the
    # adapter's watches resume, so only a correct relist shows the adapter that it is gone
    # (no ghost) and that its replacement exists (none lost).
    c.create_deployment(ns, "spare", replicas=1, model="spare-model")
    wait_fleet(c, ns, "spare", 1)
    (ghost,) = running_pods(c, ns, "spare")
    c.wait_for(lambda: ghost in values(c, ns, WAITING), "the spare pod to be served", 20)
    direct = c.adapter_direct()
    errors_before = adapter_counter(c, "inferscale_adapter_watch_errors_total")

    probes: list[tuple[str, int, bytes]] = []
    halt = threading.Event()

    def probe() -> None:
        """The kubelet's probes on the adapter, every half second, through the outage."""
        while not halt.wait(0.5):
            for path in ("/readyz", "/livez"):
                try:
                    code, body = direct.raw("GET", path)
                except OSError as e:
                    code, body = 0, str(e).encode()
                probes.append((path, code, body[:120]))
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t_down = time.monotonic()
    try:
        with disrupts("api"):
            stop_s, exit_code, start_s = c.restart_apiserver()
            t_up = time.monotonic()
            c.api.delete(f"/api/v1/namespaces/{ns}/pods/{ghost}")
            # A fresh HPA value only a sync after the restart can show: 2.3 + 2 + 2 = 6.3
            # waiting, 2.1 per pod, within the HPA's 10 % tolerance of its target (it must
            # hold 3).
            set_synthetic_load(c.fleet.sim_address(ns, pods[0]), waiting=2.3)
            c.wait_for(lambda: values(c, ns, WAITING).get(pods[1]) == 2,
                       "a read through the aggregator", 60, interval=0.2)
            t_read = time.monotonic()
            c.wait_for(lambda: hpa_average(c.hpa(ns, name), WAITING) == 2.1,
                       "the HPA to compute 2.1 per pod after the restart", 60, interval=0.25)
            t_hpa = time.monotonic()

        def relisted():
            spare = [p for p in running_pods(c, ns, "spare") if p != ghost]
            served = values(c, ns, WAITING)
            scrape_pods = [p for p in c.api.get("/api/v1/pods",
                                                labelSelector="inferscale.dev/scrape=true")
                           ["items"] if not p["metadata"].get("deletionTimestamp")]
            code, body = direct.raw("GET", "/readyz")
            targets = int(body.split(b":")[1].split()[0]) if code == 200 else -1
            return (spare and spare[0] in served and ghost not in served
                    and targets == len(scrape_pods) and (spare[0], targets))
        replacement, targets = c.wait_for(relisted, "the adapter to drop the deleted pod and "
                                          "serve its replacement", 60, interval=0.25)
        t_relisted = time.monotonic()
    finally:
        halt.set()
        prober.join(timeout=5)
        rec.stop()
        print(rec.summary(t_down))
    code, _ = c.api.raw("GET", f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/{ghost}/{WAITING}")
    assert code == 404, code
    errors = adapter_counter(c, "inferscale_adapter_watch_errors_total") - errors_before
    # The adapter saw the outage (its watches failed and were retried) and stayed up, ready
    # and live through it: nothing to restart, nothing taken out of the Service.
    assert errors > 0, "the adapter's watches never failed: the restart was not exercised"
    assert c.adapter.alive()
    bad = [p for p in probes if p[1] != 200]
    assert probes and not bad, bad[:5]
    # The HPA held 3 throughout: no scale-down to the minimum from missing data.
    assert held_three(rec, t_down), rec.summary(t_down)
    assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)
    served = values(c, ns, WAITING)
    assert served == {pods[0]: 2.3, pods[1]: 2, pods[2]: 2, replacement: 0}, served
    print(f"kube-apiserver restart: exited (code {exit_code}) in {stop_s:.1f}s, /readyz {start_s:.1f}s after its "
          f"start; then the first aggregated read {t_read - t_up:.1f}s, a fresh HPA value "
          f"{t_hpa - t_up:.1f}s, the adapter's relist (deleted pod gone, replacement served, "
          f"{targets} targets) {t_relisted - t_up:.1f}s after /readyz; {errors:.0f} watch "
          f"errors counted, /readyz and /livez 200 in all {len(probes)} probes")


# --- m. one of two adapter replicas SIGKILLed ---------------------------------------------------

REPLICA_HOST = "127.0.0.2"
# After the kill, reads continue this long (four HPA syncs).
AFTER_FAILOVER_SECONDS = 8
# From the moment the endpoint left the ready set until the aggregator routes no request to
# it: an informer event inside the same kube-apiserver (milliseconds; seconds on a loaded
# 2-core machine).
PROPAGATION_SECONDS = 2.0


def wait_both_replicas_serve(c: Cluster, ns: str, expected: dict[str, float]) -> None:
    """Until the replica serves the fleet's values itself, then until both adapters have
    answered aggregated reads (the aggregator picks a ready endpoint at random per
    request)."""
    replica = c.adapter_direct(cert=c.pki.admin, host=REPLICA_HOST)

    def replica_serves() -> bool:
        code, body = replica.raw("GET", f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{WAITING}")
        return code == 200 and {i["describedObject"]["name"]: quantity(i["value"])
                                for i in json.loads(body)["items"]} == expected
    c.wait_for(replica_serves, "the replica to serve the fleet's values", 20)
    before = {h: adapter_counter(c, "inferscale_adapter_requests_total", h, "custom")
              for h in (ADAPTER_HOST, REPLICA_HOST)}

    def both() -> bool:
        values(c, ns, WAITING)
        return all(adapter_counter(c, "inferscale_adapter_requests_total", h, "custom")
                   > before[h] for h in before)
    c.wait_for(both, "aggregated reads answered by both replicas", 20, interval=0.2)


def test_m_adapter_replica_sigkilled(cluster: Cluster):
    c, ns, name = cluster, "e2e-replica-kill", "vllm"
    pods, rec = steady_queue_fleet_with_hpa(c, ns, name)
    expected = {p: 2.0 for p in pods}
    reader = AggregatedReader(c, ns, expected)
    try:
        with AdapterReplica(c, REPLICA_HOST) as replica:
            wait_both_replicas_serve(c, ns, expected)
            reader.start()
            time.sleep(2)
            with disrupts("aggregated"):
                t_kill = replica.kill()
                c.wait_for(lambda: replica.unready_at, "the replica's endpoint to turn unready",
                           10, interval=0.1)
                t_unready = replica.unready_at
                unavailable = []
                while time.monotonic() - t_unready < AFTER_FAILOVER_SECONDS:
                    unavailable += [f"{n}: {v}" for n, v in c.apiservice_conditions().items()
                                    if not v.startswith("True")]
                    time.sleep(0.5)
            reader.stop()
    finally:
        reader.stop()
        rec.stop()
        print(rec.summary())
    failures = reader.failures()
    assert reader.count(until=t_kill) >= 10, reader.count(until=t_kill)
    before = [f for f in failures if f[0] < t_kill]
    assert before == [], before[:5]
    # Failed reads only between the kill and the endpoint's removal (plus its propagation);
    # every read after that answered by the surviving replica, with the exact values.
    late = [f for f in failures if f[0] > t_unready + PROPAGATION_SECONDS]
    assert late == [], late[:5]
    after = reader.count(since=t_unready + PROPAGATION_SECONDS)
    assert after >= 2 * (AFTER_FAILOVER_SECONDS - PROPAGATION_SECONDS), after
    assert t_unready - t_kill <= REPLICA_EXIT_POLL_SECONDS + 1.0, t_unready - t_kill
    assert unavailable == [], unavailable[:5]
    # The HPA held 3; a failed read makes one sync FailedGetPodsMetric at most, never a
    # decision, and none after the failover.
    assert held_three(rec, t_kill), rec.summary(t_kill)
    inactive = [s for s in rec.since(t_kill) if s["active"] == "False"]
    assert all(s["t"] <= t_unready + PROPAGATION_SECONDS + 2 * 2.0 for s in inactive), \
        rec.summary(t_kill)
    assert (condition(c.hpa(ns, name), "ScalingActive") or {}).get("status") == "True"
    assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)
    window = (failures[-1][0] - t_kill) if failures else 0.0
    print(f"replica SIGKILLed: endpoint unready after {t_unready - t_kill:.1f}s; "
          f"{len(failures)} of {reader.count(since=t_kill, until=t_unready + PROPAGATION_SECONDS)}"
          f" aggregated reads failed in that window (last {window:.1f}s after the kill), 0 of "
          f"{after} after it; HPA syncs without a metric: {len(inactive)} samples; "
          f"first failures: {failures[:2]}")


# --- n. SIGTERM of an adapter replica while reads go through the aggregator -------------------

# The adapter's default --shutdown-delay and its drain bound (adapter/src/http.rs
# DRAIN_TIMEOUT): it must exit 0 after the one and within both, well inside the 30 s
# termination grace period its pod keeps (deploy/ sets none: Kubernetes' default).
SHUTDOWN_DELAY_SECONDS = 5.0
DRAIN_SECONDS = 10.0


def test_n_sigterm_drains_behind_the_service(cluster: Cluster):
    c, ns, name = cluster, "e2e-replica-term", "vllm"
    pods, rec = steady_queue_fleet_with_hpa(c, ns, name)
    expected = {p: 2.0 for p in pods}
    reader = AggregatedReader(c, ns, expected)
    # A keep-alive client straight on the terminating replica (what the aggregator's pooled
    # connections are): answered until the listener closes.
    direct: list[tuple[float, int | str]] = []
    halt = threading.Event()

    def read_direct() -> None:
        client = c.adapter_direct(cert=c.pki.admin, host=REPLICA_HOST)
        path = f"{CUSTOM}/v1beta2/namespaces/{ns}/pods/*/{WAITING}"
        while not halt.wait(0.05):
            try:
                code, _ = client.raw("GET", path)
                direct.append((time.monotonic(), code))
            except OSError as e:
                direct.append((time.monotonic(), type(e).__name__))
    direct_reader = threading.Thread(target=read_direct, daemon=True)
    try:
        with AdapterReplica(c, REPLICA_HOST) as replica:
            wait_both_replicas_serve(c, ns, expected)
            reader.start()
            direct_reader.start()
            time.sleep(2)
            t_term = replica.terminate()
            code = replica.proc.popen.wait(timeout=SHUTDOWN_DELAY_SECONDS + DRAIN_SECONDS + 10)
            t_exit = time.monotonic()
            # The direct client's next request after the exit is refused; a request in flight
            # when the listener closed may have been the last one answered.
            c.wait_for(lambda: direct and direct[-1][0] > t_exit, "a direct request after the "
                       "exit", 5, interval=0.05)
            halt.set()
            time.sleep(4)  # two more HPA syncs on the survivor
            reader.stop()
            log_tail = replica.proc.log_tail(20)
    finally:
        halt.set()
        reader.stop()
        rec.stop()
        print(rec.summary())
    assert code == 0, (code, log_tail)
    assert SHUTDOWN_DELAY_SECONDS <= t_exit - t_term <= SHUTDOWN_DELAY_SECONDS + DRAIN_SECONDS, \
        t_exit - t_term
    # Through the aggregator: not one failed or wrong read, before, during or after.
    assert reader.failures() == [], reader.failures()[:5]
    during = reader.count(since=t_term, until=t_exit)
    assert during >= 10, during
    # Straight on the replica: every request until the listener closed was answered 200;
    # after it, connections were refused (the process was gone), never an error status.
    served = [r for t, r in direct if t >= t_term and r == 200]
    after_term = [(t - t_term, r) for t, r in direct if t >= t_term]
    first_refusal = next((t for t, r in after_term if r != 200), None)
    assert first_refusal is not None and first_refusal >= SHUTDOWN_DELAY_SECONDS, after_term[:5]
    assert all(isinstance(r, str) for t, r in after_term if t >= first_refusal), after_term
    assert len(served) >= 20, len(served)
    assert held_three(rec, t_term), rec.summary(t_term)
    assert all(s["active"] == "True" for s in rec.since(t_term)), rec.summary(t_term)
    assert rescale_events(c, ns, name) == [], rescale_events(c, ns, name)
    print(f"replica SIGTERMed: exit 0 after {t_exit - t_term:.1f}s (delay "
          f"{SHUTDOWN_DELAY_SECONDS:.0f}s); {len(served)} direct requests answered 200 after "
          f"the signal, the first refused {first_refusal:.1f}s after it; {during} aggregated "
          f"reads during the shutdown and {len(reader.results)} in all, 0 failed")
