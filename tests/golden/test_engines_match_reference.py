"""Black-box golden test of the SGLang and TGI profiles: the REAL `adapter inspect --json` on
the real SGLang and TGI scrapes (shared/fixtures/sglang, shared/fixtures/tgi) against
reference_engines.py, whose rules come from the engines' documentation and the scrapes.

One scrape per fixture (gauges, KV capacity, percentiles and counts since start; rates need two
scrapes) and two scrapes 15 s apart (the fixture, then reference_engines.advance of it: rates and
window percentiles).  The hand-worked numbers behind the reference are checked first, so a wrong
reference cannot pass.  Skips (visibly, as pytest reports them) without ADAPTER_BIN or the shared
fixtures; the hand-worked checks need only the fixtures.
"""

from __future__ import annotations

import math

import pytest

import reference
import reference_engines as ref
from test_adapter_matches_reference import ADAPTER_BIN, Missing, check, run_adapter

ENGINE_FIXTURES = [
    "sglang/sglang-docs-2024-11-07-5bc2508-gemma-2-9b-it.txt",
    "sglang/sglang-docs-2024-12-22-8496701-llama-3.1-8b-instruct.txt",
    "sglang/sglang-docs-2025-03-03-a7000a7-llama-3.1-8b-instruct.txt",
    "sglang/sglang-0.5.x-dynamo-qwen3-0.6b.txt",
    "tgi/tgi-3.x-datadog-integrations-core-payload.txt",
]
HISTS = {"ttft": "time_to_first_token", "itl": "inter_token_latency", "e2e": "end_to_end_latency",
         "queue_time": "queue_time"}
RATES = {"prompt_tokens_total": "prompt_token_rate", "generation_tokens_total": "generation_token_rate",
         "requests_total": "request_rate"}
needs_adapter = pytest.mark.skipif(not ADAPTER_BIN, reason="ADAPTER_BIN not set (see test_adapter_matches_reference.py)")


@pytest.fixture(params=ENGINE_FIXTURES)
def fixture_path(request, fixtures_root):
    path = fixtures_root / request.param
    if not path.is_file():
        pytest.skip(f"{request.param} missing under {fixtures_root}")
    return path


# --------------------------------------------------------------------------
# The reference against numbers worked out by hand from the fixture text
# --------------------------------------------------------------------------


def test_reference_on_hand_worked_sglang_0_3_5(fixture_text):
    doc = ref.signals(fixture_text("sglang/sglang-docs-2024-11-07-5bc2508-gemma-2-9b-it.txt"))
    m = doc["models"]["google/gemma-2-9b-it"]
    assert doc["kv_capacity_tokens"] == 161721.0
    assert (m["queue_depth"], m["running"], m["kv_cache_usage"]) == (0.0, 0.0, 0.01)
    assert m["requests_total"] == 2104.0  # e2e_request_latency_seconds_count
    # TTFT: 707 at le=0.1, 1187 at le=0.25, total 2124 -> rank 1062.
    assert m["histograms"]["ttft"]["p50"] == pytest.approx(0.1 + 0.15 * 355 / 480)
    # waiting_request_latency_seconds: 900 at le=5, 1270 at le=10 -> rank 1052.
    assert m["histograms"]["queue_time"]["metric"] == "sglang:waiting_request_latency_seconds"
    assert m["histograms"]["queue_time"]["p50"] == pytest.approx(5 + 5 * 152 / 370)


def test_reference_on_hand_worked_sglang_0_5(fixture_text):
    doc = ref.signals(fixture_text("sglang/sglang-0.5.x-dynamo-qwen3-0.6b.txt"))
    m = doc["models"]["Qwen/Qwen3-0.6B"]
    assert doc["kv_capacity_tokens"] == 92962.0
    assert m["requests_total"] == 1.0
    # ITL: 57 at le=0.002, 299 at le=0.004 -> rank 149.5.
    assert m["histograms"]["itl"]["p50"] == pytest.approx(0.002 + 0.002 * 92.5 / 242)
    assert m["histograms"]["queue_time"]["p50"] == pytest.approx(0.05)


def test_reference_on_hand_worked_tgi(fixture_text):
    doc = ref.signals(fixture_text("tgi/tgi-3.x-datadog-integrations-core-payload.txt"))
    assert list(doc["models"]) == [""] and doc["kv_capacity_tokens"] is None
    m = doc["models"][""]
    assert (m["prompt_tokens_total"], m["generation_tokens_total"], m["requests_total"]) == (662.0, 3423.0, 109.0)
    assert m["histograms"]["ttft"]["status"] == "absent"
    lo, hi = 3.787675244106352, 5.681512866159528  # 51 and 77 of 109: rank 54.5
    assert m["histograms"]["e2e"]["p50"] == pytest.approx(lo + (hi - lo) * 3.5 / 26)


# --------------------------------------------------------------------------
# The adapter against the reference
# --------------------------------------------------------------------------


def _gauge(value):
    return Missing("not_exposed") if value is None else value


def _latency_since_start(h: dict) -> dict:
    if h["status"] == "absent":
        return {k: Missing("not_exposed") for k in ("p50", "p90", "p95", "p99", "observations")}
    if h["status"] == "truncated":
        return {k: Missing("incomplete_histogram") for k in ("p50", "p90", "p95", "p99")}
    want = {"observations": h["count"]}
    for k in ("p50", "p90", "p95", "p99"):
        want[k] = Missing("no_observations") if h[k] is None else h[k]
    return want


@needs_adapter
def test_one_scrape_matches_reference(fixture_path):
    want = ref.signals(fixture_path.read_text())
    got = run_adapter(fixture_path)["replica"]
    assert got["engine"] == want["engine"]
    check(_gauge(want["kv_capacity_tokens"]), got["kv_capacity_tokens"], "$.kv_capacity_tokens")
    assert sorted(got["models"]) == sorted(want["models"])
    for model, m in want["models"].items():
        g = got["models"][model]
        for key in ("queue_depth", "running", "kv_cache_usage"):
            check(_gauge(m[key]), g[key], f"$.models[{model!r}].{key}")
        for key, rate in RATES.items():
            expected = Missing("not_exposed") if m[key] is None else Missing("needs_two_scrapes")
            check(expected, g[rate], f"$.models[{model!r}].{rate}")
        for key, name in HISTS.items():
            check(_latency_since_start(m["histograms"][key]), g[name], f"$.models[{model!r}].{name}")


@needs_adapter
def test_two_scrapes_match_reference(fixture_path, tmp_path):
    earlier = fixture_path.read_text()
    later = ref.advance(earlier)
    assert later != earlier
    (tmp_path / "earlier.txt").write_text(earlier)
    (tmp_path / "later.txt").write_text(later)
    want = ref.window(earlier, later, 15.0)
    got = run_adapter(tmp_path / "earlier.txt", tmp_path / "later.txt")["replica"]
    assert got["window"]["seconds"] == pytest.approx(15.0)
    for model, m in want["models"].items():
        g = got["models"][model]
        for key in ("queue_depth", "running", "kv_cache_usage"):
            check(_gauge(m[key]), g[key], f"$.models[{model!r}].{key}")
        for key, rate in RATES.items():
            check(_gauge(m[key]), g[rate], f"$.models[{model!r}].{rate}")
        for key, name in HISTS.items():
            h = m["histograms"][key]
            if h["count"] is None:
                want_h = {k: Missing("not_exposed") for k in ("p50", "p99", "observations")}
            else:
                want_h = {"observations": h["count"], **{k: h[k] for k in ("p50", "p90", "p95", "p99")}}
            check(want_h, g[name], f"$.models[{model!r}].{name}")
            assert all(v is None or not math.isnan(v) for v in h.values() if not isinstance(v, str))
