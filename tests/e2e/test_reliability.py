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
   prints (and writes to ``$INFERSCALE_FAULT_TABLE`` when set) is docs/fault-suite.md's.

The HPA windows are shortened from the guide's (scale-down stabilisation 300 s there, 10 s
here) so a scale-down happens within a test's patience; the metrics and targets are the
guide's.
"""

from __future__ import annotations

import os
import time

from .cluster import DCGM_NAMESPACE, Cluster
from .load import ClosedLoopLoad, post_json, set_synthetic_load
from .test_e2e import (CUSTOM, TTFT_P95, WAITING, HpaRecorder, addresses, condition,
                       hpa_average, p95_of_constant, rescale_events, running_pods,
                       steady_synthetic_fleet, wait_fleet)
from .kube import quantity

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
