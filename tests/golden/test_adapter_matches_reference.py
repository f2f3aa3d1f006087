"""Black-box golden test: the REAL output of `adapter inspect --json` vs reference.py.

The binary is given by ADAPTER_BIN (tests skip, saying so, when it is unset), e.g.
  cargo build -p inferscale-adapter
  ADAPTER_BIN=target/debug/adapter python3 -m pytest tests/golden -q
Fixtures come from $INFERSCALE_SHARED/fixtures (default <repo>/../shared/fixtures), as in
conftest.py; tests needing them skip when the folder is absent.  Derived scrapes (series, reset,
truncated histogram, attributed dcgm) are written to pytest's tmp_path, never into the repo.

Only the adapter's JSON is judged (its Rust code was not read).  Output shape, learned by running it:
  {"scrapes": n, "parse": [{"source","lines","samples_read","samples_ignored","skipped_lines",
   "skipped_by_kind","first_skipped_lines","dropped","dropped_by_kind"}, ...one per file],
   "replica": null | {"engine","taken_at","window":{"start","end","seconds","since_start"},
                      "kv_capacity_tokens","combined":{...},"models":{model:{...}}},
   "gpu": null | {"gpus":[{"uuid","index","model_name","node","pod","container","fields"}],
                  "join":{"pods":{...},"idle_by_node":{node:{"gpus","memory_free_bytes","uuids"}}}}}
A value that is not available is {"missing": reason}; never null, never a made-up 0.  An idle
latency (README "Idle is not missing") is 0.0 in every percentile and the mean, with
"idle": true; every latency carries "idle".  Base units.
Files are scrapes taken `--interval` (15s here) apart, oldest first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import make_series
import reference
from conftest import all_fixture_params

ADAPTER_BIN = os.environ.get("ADAPTER_BIN")
pytestmark = pytest.mark.skipif(
    not ADAPTER_BIN,
    reason="ADAPTER_BIN not set: build with `cargo build -p inferscale-adapter` and run with "
    "ADAPTER_BIN=target/debug/adapter",
)

INTERVAL = 15.0
MIB = 1048576.0
REASONS = {"not_exposed", "needs_two_scrapes", "counter_reset", "no_observations", "incomplete_histogram"}
PCTS = ("p50", "p90", "p95", "p99")
# reference histogram key -> adapter key
HISTS = {
    "ttft": "time_to_first_token",
    "itl": "inter_token_latency",
    "e2e": "end_to_end_latency",
    "queue_time": "queue_time",
}
# reference counter key -> adapter rate key
RATES = {
    "prompt_tokens_total": "prompt_token_rate",
    "generation_tokens_total": "generation_token_rate",
    "preemptions_total": "preemption_rate",
}
VLLM = sorted(f"vllm/{p.name}" for p in reference.fixture_files() if p.parent.name == "vllm") or [
    pytest.param(None, marks=pytest.mark.skip(reason=f"no vLLM fixtures under {reference.fixtures_dir()}"))
]


# --------------------------------------------------------------------------
# Running the binary
# --------------------------------------------------------------------------


def run_adapter(*files) -> dict:
    assert Path(ADAPTER_BIN).is_file(), f"ADAPTER_BIN={ADAPTER_BIN!r} is not a file (cwd {os.getcwd()})"
    cmd = [ADAPTER_BIN, "inspect", "--json", "--interval", "15s"] + [str(f) for f in files]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}: {p.stderr.strip().splitlines()[:3]}"
    return json.loads(p.stdout)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------


class Missing:
    """Expected {"missing": reason}; reason None = any valid reason."""

    def __init__(self, reason: Optional[str] = None):
        assert reason is None or reason in REASONS
        self.reason = reason

    def __repr__(self):
        return f"Missing({self.reason or '*'})"


def missing(reason=None) -> Missing:
    return Missing(reason)


def check(want, got, path="$"):
    if isinstance(want, Missing):
        assert isinstance(got, dict) and set(got) == {"missing"}, f"{path}: expected {want}, adapter gave {got!r}"
        assert got["missing"] in REASONS, f"{path}: unknown missing reason {got['missing']!r}"
        if want.reason is not None:
            assert got["missing"] == want.reason, f"{path}: expected {want}, adapter gave {got!r}"
    elif want is None:
        assert got is None, f"{path}: expected null, adapter gave {got!r}"
    elif isinstance(want, bool):
        assert got is want, f"{path}: expected {want}, adapter gave {got!r}"
    elif isinstance(want, (int, float)):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{path}: expected {want}, adapter gave {got!r}"
        assert not math.isnan(got), f"{path}: NaN"
        assert got == pytest.approx(want, rel=1e-9), f"{path}: expected {want!r}, adapter gave {got!r}"
    elif isinstance(want, str):
        assert got == want, f"{path}: expected {want!r}, adapter gave {got!r}"
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: expected {want!r}, adapter gave {got!r}"
        for i, (w, g) in enumerate(zip(want, got)):
            check(w, g, f"{path}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: expected object, adapter gave {got!r}"
        for k, v in want.items():
            assert k in got, f"{path}: adapter output lacks key {k!r} (has {sorted(got)})"
            check(v, got[k], f"{path}.{k}")
    else:  # pragma: no cover
        raise TypeError(type(want))


def assert_no_null_or_nan(doc, path):
    """Signals: every leaf is a number or a {"missing": reason} object."""
    if isinstance(doc, dict):
        if set(doc) == {"missing"}:
            assert doc["missing"] in REASONS, f"{path}: unknown missing reason {doc['missing']!r}"
            return
        for k, v in doc.items():
            if k == "idle":
                assert isinstance(v, bool), f"{path}.idle: {v!r}"
                continue
            assert_no_null_or_nan(v, f"{path}.{k}")
    else:
        assert doc is not None, f"{path}: null (an unavailable value must be {{'missing': reason}})"
        assert isinstance(doc, (int, float)) and not isinstance(doc, bool), f"{path}: {doc!r}"
        assert not math.isnan(doc), f"{path}: NaN"


# --------------------------------------------------------------------------
# Expected values, from reference.py
# --------------------------------------------------------------------------


def _num_or_missing(v, reason="not_exposed"):
    return missing(reason) if v is None else v


def _kv_max(samples, model, source) -> Optional[float]:
    """Largest KV usage over the engines of a model (reference averages them)."""
    if source is None:
        return None
    return max(s.value for s in samples if s.name == source and s.ldict.get("model_name") == model)


def _gauges(sig: dict, samples, model) -> dict:
    return {
        "queue_depth": _num_or_missing(sig["queue_depth"]),
        "running": _num_or_missing(sig["running"]),
        "kv_cache_usage": _num_or_missing(sig["kv_cache_usage"]),
        "kv_cache_usage_max": _num_or_missing(_kv_max(samples, model, sig["kv_cache_usage_source"])),
    }


def _hist_common(status: str) -> Optional[dict]:
    if status == "absent":
        return {**{k: missing("not_exposed") for k in PCTS + ("observations", "mean")}, "idle": False}
    if status == "truncated":
        return {**{k: missing("incomplete_histogram") for k in PCTS + ("observations", "mean")},
                "idle": False}
    if status == "no_data":
        d = {k: missing("no_observations") for k in PCTS + ("mean",)}
        d["observations"] = 0.0
        d["idle"] = False
        return d
    if status == "idle":
        return {**{k: 0.0 for k in PCTS + ("observations", "mean")}, "idle": True}
    assert status == "ok", f"unexpected reference histogram status {status!r}"
    return None


def _hist_cumulative(h: dict) -> dict:
    """Since-start percentiles: histogram_quantile over the cumulative buckets."""
    d = _hist_common(h["status"])
    if d is not None:
        return d
    d = {k: missing() if h[k] is None else h[k] for k in PCTS}
    d["observations"] = h["count"]
    d["mean"] = missing() if h["sum"] is None else h["sum"] / h["count"]
    d["idle"] = False
    return d


def _hist_window(h: dict, sum_earlier: Optional[float], sum_later: Optional[float]) -> dict:
    """Window percentiles: histogram_quantile over the bucket deltas."""
    d = _hist_common(h["status"])
    if d is not None:
        return d
    d = {k: missing() if h[k] is None else h[k] for k in PCTS}
    d["observations"] = h["count"]
    d["mean"] = missing() if None in (sum_earlier, sum_later) else (sum_later - sum_earlier) / h["count"]
    d["idle"] = False
    return d


def expect_single(text: str) -> Dict[str, dict]:
    """(a) one scrape: gauges, since-start percentiles, every rate needs_two_scrapes."""
    samples = reference.parse(text).samples
    out = {}
    for m, s in reference.vllm_signals_from_samples(samples)["models"].items():
        d = _gauges(s, samples, m)
        for key, rate in RATES.items():
            # an unexposed counter may say not_exposed or needs_two_scrapes: either is fair
            d[rate] = missing("needs_two_scrapes") if s[key] is not None else missing()
        reasons = s["requests_by_finished_reason"] or {}
        d["request_rate"] = missing("needs_two_scrapes") if reasons else missing()
        d["request_rate_by_reason"] = {r: missing("needs_two_scrapes") for r in reasons}
        for key, name in HISTS.items():
            d[name] = _hist_cumulative(s["histograms"][key])
        out[m] = d
    return out


def expect_window(text_earlier: str, text_later: str) -> Dict[str, dict]:
    """(b) rates = increase / 15 s, percentiles over bucket deltas, gauges of the later scrape."""
    win = reference.vllm_window(text_earlier, text_later, INTERVAL)["models"]
    e_sig = reference.vllm_signals(text_earlier)["models"]
    l_samples = reference.parse(text_later).samples
    l_sig = reference.vllm_signals_from_samples(l_samples)["models"]
    out = {}
    for m, w in win.items():
        assert not w["any_reset"], f"{m}: scenario unexpectedly contains a counter reset"
        d = _gauges(l_sig[m], l_samples, m)
        for key, rate in RATES.items():
            d[rate] = _num_or_missing(w["counters"][key]["rate"])
        by_reason = w["counters"]["requests_by_finished_reason"]
        d["request_rate_by_reason"] = {r: _num_or_missing(c["rate"]) for r, c in by_reason.items()}
        rates = [c["rate"] for c in by_reason.values()]
        d["request_rate"] = missing() if not rates or None in rates else sum(rates)
        for key, name in HISTS.items():
            eh = e_sig.get(m, {}).get("histograms", {}).get(key, {})
            d[name] = _hist_window(w["histograms"][key], eh.get("sum"), l_sig[m]["histograms"][key]["sum"])
        out[m] = d
    return out


def expect_restart(text_restarted: str) -> Dict[str, dict]:
    """(c) the pod restarted between the last two scrapes: every rate counter_reset,
    percentiles over the restarted scrape's cumulative buckets (observations since the restart)."""
    samples = reference.parse(text_restarted).samples
    out = {}
    for m, s in reference.vllm_signals_from_samples(samples)["models"].items():
        d = _gauges(s, samples, m)
        for rate in RATES.values():
            d[rate] = missing("counter_reset")
        reasons = s["requests_by_finished_reason"] or {}
        d["request_rate"] = missing("counter_reset")
        d["request_rate_by_reason"] = {r: missing("counter_reset") for r in reasons}
        for key, name in HISTS.items():
            d[name] = _hist_cumulative(s["histograms"][key])
        out[m] = d
    return out


def kv_capacity(text: str):
    caps = [m["kv_capacity_tokens"] for m in reference.vllm_signals(text)["models"].values()]
    return missing() if not caps or None in caps else float(sum(caps))


def check_replica(got: dict, want_models: Dict[str, dict], latest_text: str, window: dict):
    r = got["replica"]
    assert r is not None, "adapter output has replica: null for a vLLM scrape"
    assert r["engine"] == "vllm"
    check(window, r["window"], "$.replica.window")
    check(window["end"], r["taken_at"], "$.replica.taken_at")
    check(kv_capacity(latest_text), r["kv_capacity_tokens"], "$.replica.kv_capacity_tokens")
    assert sorted(r["models"]) == sorted(want_models), f"models: adapter {sorted(r['models'])}, reference {sorted(want_models)}"
    for m, want in want_models.items():
        g = r["models"][m]
        assert_no_null_or_nan(g, f"$.replica.models[{m!r}]")
        assert sorted(g["request_rate_by_reason"]) == sorted(want["request_rate_by_reason"]), (
            f"{m}: finished reasons adapter {sorted(g['request_rate_by_reason'])}, "
            f"reference {sorted(want['request_rate_by_reason'])}"
        )
        check(want, g, f"$.replica.models[{m!r}]")
    assert_no_null_or_nan(r["combined"], "$.replica.combined")
    if len(want_models) == 1:
        (only,) = want_models.values()
        check(only, r["combined"], "$.replica.combined")


def check_parse(got: dict, files: List[Path], dropped: Optional[dict] = None):
    """`dropped`: what the snapshot builder must have left out of each body (by kind); a real
    engine's body loses nothing."""
    dropped = dropped or {}
    assert got["scrapes"] == len(files)
    assert len(got["parse"]) == len(files)
    for p, f in zip(got["parse"], files):
        text = f.read_text()
        where = f"$.parse[{f.name}]"
        assert p["source"] == str(f), f"{where}.source {p['source']!r}"
        assert p["lines"] == len(text.splitlines()), f"{where}.lines {p['lines']} != {len(text.splitlines())}"
        total = reference.parse_stats(text)["samples"]
        assert p["samples_read"] + p["samples_ignored"] == total, (
            f"{where}: samples_read {p['samples_read']} + samples_ignored {p['samples_ignored']} != {total} "
            "samples in the body (prometheus_client)"
        )
        assert p["skipped_lines"] == 0 and p["skipped_by_kind"] == {} and p["first_skipped_lines"] == [], (
            f"{where}: well-formed body reported skipped lines: {p}"
        )
        assert p["dropped_by_kind"] == dropped and p["dropped"] == sum(dropped.values()), (
            f"{where}: dropped {p['dropped_by_kind']}, expected {dropped} (a real engine's body "
            f"loses nothing): {p}"
        )


# --------------------------------------------------------------------------
# dcgm
# --------------------------------------------------------------------------


def _gpu_util_fraction(g: dict) -> Optional[float]:
    if g["gr_engine_active"] is not None:
        return g["gr_engine_active"]
    return None if g["gpu_util_percent"] is None else g["gpu_util_percent"] / 100.0


def expect_gpu(text: str) -> dict:
    gpus = reference.dcgm_gpus(text)["gpus"]
    ident = {}
    pods: Dict[tuple, List[dict]] = {}
    idle: Dict[str, List[dict]] = {}
    for g in gpus.values():
        pod = {"namespace": g["namespace"], "pod": g["pod"]} if g["pod"] else None
        fields = {
            "utilization": None if g["gpu_util_percent"] is None else g["gpu_util_percent"] / 100.0,
            "graphics_engine_active": g["gr_engine_active"],
            "sm_active": g["sm_active"],
            "memory_used_bytes": None if g["fb_used_mib"] is None else g["fb_used_mib"] * MIB,
            "memory_free_bytes": None if g["fb_free_mib"] is None else g["fb_free_mib"] * MIB,
            "power_watts": g["power_watts"],
        }
        ident[g["uuid"]] = {
            "uuid": g["uuid"],
            "index": g["gpu"],
            "model_name": g["model_name"],
            # Absent values are left out of the adapter's JSON rather than written as null.
            **{k: v for k, v in (("node", g["hostname"]), ("pod", pod), ("container", g["container"])) if v is not None},
            "fields": {k: v for k, v in fields.items() if v is not None},
        }
        if pod:
            pods.setdefault((g["namespace"], g["pod"]), []).append(g)
        else:
            idle.setdefault(g["hostname"], []).append(g)
    want_pods = {}
    for key, gs in pods.items():
        utils = [_gpu_util_fraction(g) for g in gs]
        want_pods[key] = {
            "utilization_mean": sum(utils) / len(utils),
            "utilization_max": max(utils),
            "memory_used_bytes": sum(g["fb_used_mib"] * MIB for g in gs),
        }
    want_idle = {}
    for node, gs in idle.items():
        d = {"gpus": len(gs), "uuids": sorted(g["uuid"] for g in gs)}
        if all(g["fb_free_mib"] is not None for g in gs):
            d["memory_free_bytes"] = sum(g["fb_free_mib"] * MIB for g in gs)
        want_idle[node] = d
    return {"gpus": ident, "pods": want_pods, "idle_by_node": want_idle}


def _find_pod(pods, ns: str, pod: str):
    """join.pods entry for ns/pod, whatever the keying ("ns/pod" or entries naming them)."""
    if isinstance(pods, dict):
        for k in (f"{ns}/{pod}", f"{ns}:{pod}"):
            if k in pods:
                return pods[k]
        items = list(pods.items())
        for k, v in items:
            if isinstance(v, dict) and v.get("namespace") == ns and v.get("pod") == pod:
                return v
        for k, v in items:
            if ns in str(k) and pod in str(k):
                return v
    elif isinstance(pods, list):
        for v in pods:
            if isinstance(v, dict) and (v.get("namespace"), v.get("pod")) == (ns, pod):
                return v
            if isinstance(v, dict) and v.get("pod") == {"namespace": ns, "pod": pod}:
                return v
    raise AssertionError(f"join.pods has no entry for {ns}/{pod}: {pods!r}")


def check_gpu(got: dict, text: str):
    want = expect_gpu(text)
    g = got["gpu"]
    assert g is not None, "adapter output has gpu: null for a dcgm scrape"
    by_uuid = {x["uuid"]: x for x in g["gpus"]}
    assert len(by_uuid) == len(g["gpus"]), "duplicate uuids in gpu.gpus"
    assert sorted(by_uuid) == sorted(want["gpus"]), f"GPUs: adapter {sorted(by_uuid)}, reference {sorted(want['gpus'])}"
    for u, w in want["gpus"].items():
        got_gpu = by_uuid[u]
        for key in ("node", "pod", "container"):
            assert (key in w) == (key in got_gpu), f"$.gpu.gpus[{u}].{key}: reference {w.get(key)!r}, adapter {got_gpu.get(key)!r}"
        # Every field the reference read must be there with its value (the adapter may read more).
        got_fields = {k: v for k, v in got_gpu["fields"].items() if k in w["fields"]}
        assert sorted(got_fields) == sorted(w["fields"]), f"$.gpu.gpus[{u}].fields: {got_gpu['fields']} vs {w['fields']}"
        check(w, got_gpu, f"$.gpu.gpus[{u}]")
    join = g["join"]
    assert len(join["pods"]) == len(want["pods"]), f"join.pods: adapter {join['pods']!r}, reference {want['pods']!r}"
    for (ns, pod), w in want["pods"].items():
        check(w, _find_pod(join["pods"], ns, pod), f"$.gpu.join.pods[{ns}/{pod}]")
    assert sorted(join["idle_by_node"]) == sorted(want["idle_by_node"]), (
        f"idle nodes: adapter {sorted(join['idle_by_node'])}, reference {sorted(want['idle_by_node'])}"
    )
    for node, w in want["idle_by_node"].items():
        gotn = dict(join["idle_by_node"][node])
        gotn["uuids"] = sorted(gotn.get("uuids", []))
        check(w, gotn, f"$.gpu.join.idle_by_node[{node}]")


# --------------------------------------------------------------------------
# Scenario builders (temp dir only)
# --------------------------------------------------------------------------

# Third scrape after the restart: increments deliberately different from make_series' defaults,
# so that (third - second)/15 cannot be confused with any other pair of scrapes.
AFTER_RESET = {
    "observe": {
        "vllm:time_to_first_token_seconds": [(0.3, 4), (0.04, 2)],
        "vllm:inter_token_latency_seconds": [(0.05, 40)],
        "vllm:time_per_output_token_seconds": [(0.05, 40)],
        "vllm:e2e_request_latency_seconds": [(2.5, 3)],
        "vllm:request_queue_time_seconds": [(0.2, 4), (0.6, 2)],
    },
    "inc": {
        "vllm:prompt_tokens_total": 600.0,
        "vllm:generation_tokens_total": 1200.0,
        "vllm:num_preemptions_total": 1.0,
        "vllm:request_success_total{finished_reason=stop}": 3.0,
        "vllm:request_success_total{finished_reason=length}": 3.0,
    },
    "set": {
        "vllm:num_requests_waiting": 2.0,
        "vllm:num_requests_running": 4.0,
        "vllm:kv_cache_usage_perc": 0.3,
        "vllm:gpu_cache_usage_perc": 0.3,
    },
}


def series(fixtures_root: Path, rel: str, tmp_path: Path):
    m = make_series.make_series(fixtures_root / rel, tmp_path, interval=INTERVAL)
    return {k: tmp_path / v for k, v in m["files"].items()}


def truncate_ttft(text: str) -> str:
    """Drop the TTFT +Inf bucket and _count lines (as test_reference_selfcheck does)."""
    return "\n".join(
        line
        for line in text.splitlines()
        if not (line.startswith("vllm:time_to_first_token_seconds_bucket") and 'le="+Inf"' in line)
        and not line.startswith("vllm:time_to_first_token_seconds_count")
    ) + "\n"


# --------------------------------------------------------------------------
# (a) + (d): every fixture, one scrape
# --------------------------------------------------------------------------

SINGLE_WINDOW = {"start": None, "end": 0.0, "seconds": None, "since_start": True}


@pytest.mark.parametrize("path", all_fixture_params())
def test_single_scrape_matches_reference(path):
    text = path.read_text()
    got = run_adapter(path)
    check_parse(got, [path])
    if reference.fixture_kind(path) == "vllm":
        assert got["gpu"] is None
        check_replica(got, expect_single(text), text, SINGLE_WINDOW)
    else:
        assert got["replica"] is None
        check_gpu(got, text)


def test_truncated_histogram_is_incomplete(fixture_text, tmp_path):
    text = truncate_ttft(fixture_text("vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt"))
    f = tmp_path / "ttft-no-inf.prom"
    f.write_text(text)
    want = expect_single(text)
    assert want["Qwen/Qwen3-0.6B"]["time_to_first_token"]["p50"].reason == "incomplete_histogram"
    got = run_adapter(f)
    # The one TTFT histogram without its +Inf bucket is dropped and counted.
    check_parse(got, [f], dropped={"missing_inf_bucket": 1})
    check_replica(got, want, text, SINGLE_WINDOW)


# --------------------------------------------------------------------------
# (b) two scrapes 15 s apart
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rel", VLLM)
def test_two_scrapes_rates_and_window_percentiles(fixtures_root, tmp_path, rel):
    f = series(fixtures_root, rel, tmp_path)
    te, tl = f["earlier"].read_text(), f["later"].read_text()
    got = run_adapter(f["earlier"], f["later"])
    check_parse(got, [f["earlier"], f["later"]])
    window = {"start": 0.0, "end": INTERVAL, "seconds": INTERVAL, "since_start": False}
    check_replica(got, expect_window(te, tl), tl, window)


# --------------------------------------------------------------------------
# (c) restart between scrapes, and a third scrape after the restart
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rel", VLLM)
def test_restart_marks_rates_counter_reset(fixtures_root, tmp_path, rel):
    f = series(fixtures_root, rel, tmp_path)
    te, tr = f["earlier"].read_text(), f["reset"].read_text()
    w = reference.vllm_window(te, tr, INTERVAL)["models"]
    # the restart must be visible: a counter falls (0.13, 0.7.0; neither has
    # process_start_time_seconds), or, on the idle 0.16 fixture whose counters are all 0, only
    # the *_created timestamps move (its process_start_time_seconds is left unchanged by
    # make_series).  The adapter is expected to see the restart either way.
    assert all(d["any_reset"] or d["created_changed"] for d in w.values()), w
    got = run_adapter(f["earlier"], f["reset"])
    check_parse(got, [f["earlier"], f["reset"]])
    window = {"start": None, "end": INTERVAL, "seconds": None, "since_start": True}
    check_replica(got, expect_restart(tr), tr, window)


@pytest.mark.parametrize("rel", VLLM)
def test_scrape_after_restart_rates_from_last_pair(fixtures_root, tmp_path, rel):
    f = series(fixtures_root, rel, tmp_path)
    tr = f["reset"].read_text()
    third_text, _ = make_series.transform(tr, AFTER_RESET, reset=False, interval=INTERVAL)
    third = tmp_path / "after-reset.prom"
    third.write_text(third_text)
    got = run_adapter(f["earlier"], f["reset"], third)
    check_parse(got, [f["earlier"], f["reset"], third])
    window = {"start": INTERVAL, "end": 2 * INTERVAL, "seconds": INTERVAL, "since_start": False}
    check_replica(got, expect_window(tr, third_text), third_text, window)


# --------------------------------------------------------------------------
# (d) synthesised pod-attributed dcgm body (METRICS-REFERENCE.md §3 rendering rule)
# --------------------------------------------------------------------------


def dcgm_body(gpus, with_prof: bool) -> str:
    """gpus: (index, uuid, node, pod|None, util_percent, gr_engine_active, fb_used, fb_free)."""
    fields = [("DCGM_FI_DEV_GPU_UTIL", 4, "d"), ("DCGM_FI_DEV_FB_FREE", 7, "d"), ("DCGM_FI_DEV_FB_USED", 6, "d")]
    if with_prof:
        fields.append(("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 5, "f"))
    out = []
    for name, i, fmt in fields:
        out += [f"# HELP {name} synthetic", f"# TYPE {name} gauge"]
        for g in gpus:
            idx, uuid, node, pod = g[:4]
            labels = (
                f'gpu="{idx}",UUID="{uuid}",pci_bus_id="00000000:3{idx}:00.0",device="nvidia{idx}",'
                f'modelName="NVIDIA L40S",Hostname="{node}",DCGM_FI_DRIVER_VERSION="580.105.08"'
            )
            if pod:
                labels += f',container="vllm",namespace="inference",pod="{pod}"'
            v = g[i]
            out.append(f"{name}{{{labels}}} " + (f"{v:f}" if fmt == "f" else str(int(v))))
    return "\n".join(out) + "\n"


ATTRIBUTED = [
    ("0", "GPU-aaaaaaaa-0000-0000-0000-000000000000", "node-1", "vllm-7d9f-x1", 40, 0.25, 1000, 47000),
    ("1", "GPU-bbbbbbbb-0000-0000-0000-000000000000", "node-1", "vllm-7d9f-x1", 90, 0.75, 3000, 45000),
    ("2", "GPU-cccccccc-0000-0000-0000-000000000000", "node-1", None, 0, 0.0, 0, 48000),
]
@pytest.mark.parametrize("with_prof", [True, False], ids=["gr_engine_active", "gpu_util_fallback"])
def test_attributed_dcgm_join(tmp_path, with_prof):
    text = dcgm_body(ATTRIBUTED, with_prof)
    want = expect_gpu(text)
    # hand check of the reference: GR_ENGINE_ACTIVE 0.25/0.75, else GPU_UTIL 40%/90%
    w = want["pods"][("inference", "vllm-7d9f-x1")]
    assert w["utilization_mean"] == pytest.approx(0.5 if with_prof else 0.65)
    assert w["utilization_max"] == pytest.approx(0.75 if with_prof else 0.9)
    assert w["memory_used_bytes"] == 4000 * MIB
    assert want["idle_by_node"] == {
        "node-1": {"gpus": 1, "uuids": [ATTRIBUTED[2][1]], "memory_free_bytes": 48000 * MIB}
    }
    f = tmp_path / "dcgm-attributed.prom"
    f.write_text(text)
    got = run_adapter(f)
    check_parse(got, [f])
    assert got["replica"] is None
    check_gpu(got, text)


def test_dcgm_empty_k8s_labels_mean_idle(fixture_text, tmp_path):
    """Older exporters print container="",namespace="",pod="" for an unheld GPU."""
    text = fixture_text("dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt").replace(
        'DCGM_FI_DRIVER_VERSION="580.105.08"}',
        'DCGM_FI_DRIVER_VERSION="580.105.08",container="",namespace="",pod=""}',
    )
    assert 'pod=""' in text
    f = tmp_path / "dcgm-empty-k8s.prom"
    f.write_text(text)
    want = expect_gpu(text)
    assert want["pods"] == {} and len(want["idle_by_node"]) == 1
    got = run_adapter(f)
    check_parse(got, [f])
    check_gpu(got, text)
