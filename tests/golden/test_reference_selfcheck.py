"""Self-check of reference.py against values worked out BY HAND.

Nothing here compares the reference with itself: every expected number is
either copied from the fixture text or computed in the comments below.
"""

import math
import re

import pytest

import make_series
import reference
from conftest import all_fixture_params
from reference import histogram_quantile as hq
from reference import window_quantile as wq

V013 = "vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt"
V016 = "vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt"
V070 = "vllm/vllm-0.7.0-v0-aibrix-runtime-docs.txt"
T4 = "dcgm/dcgm-exporter-T4-ericsson-ccd-k8s-ai-conformance-nohelp.txt"
QWEN3 = "Qwen/Qwen3-0.6B"
INF = math.inf


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------
# histogram_quantile: synthetic cases
# ---------------------------------------------------------------------------


def test_quantile_out_of_range_and_nan_q():
    b = [(1.0, 1.0), (INF, 2.0)]
    assert hq(-0.1, b) == -INF
    assert hq(1.01, b) == INF
    assert math.isnan(hq(math.nan, b))


def test_quantile_needs_inf_bucket():
    assert math.isnan(hq(0.5, [(1.0, 1.0), (2.0, 2.0)]))


def test_quantile_needs_two_buckets():
    assert math.isnan(hq(0.5, [(INF, 5.0)]))


def test_quantile_empty_histogram_is_nan():
    assert math.isnan(hq(0.5, [(1.0, 0.0), (2.0, 0.0), (INF, 0.0)]))


def test_quantile_in_inf_bucket_returns_second_highest_bound():
    # 10 observations, 8 of them above 2: rank 0.5*10 = 5 > count(le=2) = 2,
    # so the quantile falls into +Inf -> upper bound of the bucket below, 2.
    assert hq(0.5, [(1.0, 1.0), (2.0, 2.0), (INF, 10.0)]) == 2.0
    # q = 1 with observations in +Inf: same rule.
    assert hq(1.0, [(1.0, 1.0), (2.0, 2.0), (INF, 3.0)]) == 2.0


def test_quantile_first_bucket_rules():
    # first bound > 0: interpolate from 0.  rank 2.5 of 5 in (0, 0.1] -> 0.05
    assert hq(0.5, [(0.1, 5.0), (INF, 5.0)]) == approx(0.05)
    # first bound <= 0: return the bound itself.  rank 1.5 <= count(le=-1)=2
    assert hq(0.5, [(-1.0, 2.0), (0.0, 3.0), (INF, 3.0)]) == -1.0
    assert hq(0.5, [(0.0, 2.0), (1.0, 3.0), (INF, 3.0)]) == 0.0


def test_quantile_q0_and_q1():
    b = [(1.0, 0.0), (2.0, 4.0), (4.0, 4.0), (INF, 4.0)]
    # q=1: rank 4 -> first bucket with count >= 4 is le=2: 1 + (2-1)*4/4 = 2
    assert hq(1.0, b) == 2.0
    # q=0 with a NON-empty first bucket: 0 + 1.0*(0/3) = 0
    assert hq(0.0, [(1.0, 3.0), (INF, 4.0)]) == 0.0
    # q=0 with an EMPTY first bucket: rank 0, b = 0, 0/0 -> NaN (Go float math,
    # as Prometheus does)
    assert math.isnan(hq(0.0, b))


def test_quantile_sorts_merges_and_forces_monotonic():
    # unsorted input, duplicate bound 2.0 (counts add up: 1 + 1 = 2)
    assert hq(0.5, [(INF, 4.0), (2.0, 1.0), (1.0, 0.0), (2.0, 1.0)]) == 2.0
    # non-monotonic: le=2 count 1 < le=1 count 3 is lifted to 3.
    # rank 2 -> b = le=1: 0 + 1*2/3
    assert hq(0.5, [(1.0, 3.0), (2.0, 1.0), (INF, 4.0)]) == approx(2 / 3)


# Cases from Prometheus' own promql/promqltest/testdata/histograms.test
# (evaluated at 50m, so counts are 10x the per-5m increments; ratios unchanged).
PROM_POSITIVE = [(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]
PROM_NEGATIVE = [(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)]
PROM_H3_POS = [(0.0, 0.0), (0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 110.0)]
PROM_H3_NEG = [(-0.25, 0.0), (-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 20.0)]
PROM_H2 = [(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)]


@pytest.mark.parametrize(
    "q,buckets,want",
    [
        (0, PROM_POSITIVE, 0.0),
        (0, PROM_NEGATIVE, -0.2),
        (1, PROM_POSITIVE, 1.0),
        (1, PROM_NEGATIVE, 0.3),
        (0.2, PROM_POSITIVE, 0.048),
        (0.2, PROM_NEGATIVE, -0.2),
        (0.5, PROM_POSITIVE, 0.15),
        (0.5, PROM_NEGATIVE, -0.15),
        (0.8, PROM_POSITIVE, 0.72),
        (0.8, PROM_NEGATIVE, 0.3),
        (0, PROM_H3_POS, 0.0),
        (0, PROM_H3_NEG, -0.25),
        (0.25, PROM_H3_POS, 0.055),
        (0.25, PROM_H3_NEG, -0.225),
        (0.5, PROM_H3_POS, 0.125),
        (0.75, PROM_H3_POS, 0.45),
        (1, PROM_H3_POS, 1.0),
        (1, PROM_H3_NEG, -0.1),
        (1 / 6, PROM_H2, 1.0),
        (0.5, PROM_H2, 3.0),
        (5 / 6, PROM_H2, 5.0),
        # sum by (le) of the 4 request_duration_seconds series: 10, 19, 25
        (0.3, [(0.1, 10.0), (0.2, 19.0), (INF, 25.0)], 0.075),
        (0.5, [(0.1, 10.0), (0.2, 19.0), (INF, 25.0)], 0.1277777777777778),
    ],
)
def test_quantile_matches_prometheus_testdata(q, buckets, want):
    assert hq(q, buckets) == pytest.approx(want, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------
# window_quantile
# ---------------------------------------------------------------------------

E = [(0.1, 2.0), (0.5, 4.0), (1.0, 4.0), (INF, 4.0)]


def test_window_uses_deltas():
    # window adds 10 observations: 6 in (0.1, 0.5], 4 in (0.5, 1.0]
    l = [(0.1, 2.0), (0.5, 10.0), (1.0, 14.0), (INF, 14.0)]
    # deltas 0, 6, 10, 10. p50: rank 5 in (0.1,0.5] -> 0.1 + 0.4*5/6
    assert wq(0.5, E, l) == approx(0.1 + 0.4 * 5 / 6)
    # p90: rank 9 in (0.5,1.0]: 0.5 + 0.5*(9-6)/4
    assert wq(0.9, E, l) == approx(0.875)


def test_window_none_on_reset_zero_and_layout_change():
    assert wq(0.5, E, E) is None  # no observation in the window
    assert wq(0.5, E, [(0.1, 1.0), (0.5, 5.0), (1.0, 5.0), (INF, 5.0)]) is None  # le=0.1 decreased
    assert wq(0.5, E, [(0.1, 3.0), (0.5, 5.0), (INF, 5.0)]) is None  # bucket layout changed
    assert wq(0.5, [(1.0, 0.0)], [(1.0, 2.0)]) is None  # no +Inf


# ---------------------------------------------------------------------------
# The 0.13 fixture, by hand
# ---------------------------------------------------------------------------
#
# Lines of vllm-0.13-v1-dynamo-qwen3-0.6b.txt (engine="0", model Qwen/Qwen3-0.6B):
#   vllm:num_requests_running 0.0, vllm:num_requests_waiting 0.0,
#   vllm:kv_cache_usage_perc 0.0, vllm:prompt_tokens_total 66.0,
#   vllm:generation_tokens_total 600.0, vllm:num_preemptions_total 0.0,
#   vllm:request_success_total stop 0.0 / length 2.0 / abort 0.0 / error 0.0,
#   vllm:cache_config_info{block_size="16",...,num_gpu_blocks="5943"}
#     -> KV capacity 5943 * 16 = 95088 tokens.
#
# TTFT buckets (cumulative): le 0.001:0 0.005:0 0.01:0 0.02:1 0.04:1 0.06:1
#   0.08:1 0.1:1 0.25:1 0.5:2 0.75:2 ... 2560:2 +Inf:2; _count 2, _sum 0.41439...
#   (so one request had TTFT in (0.01, 0.02], the other in (0.25, 0.5]).
#   total = 2.
#   p50: rank = 0.5*2 = 1.0. First bucket with count >= 1 is le=0.02 (previous
#        le=0.01 has 0): 0.01 + (0.02-0.01) * (1-0)/(1-0) = 0.02
#   p90: rank = 1.8. le=0.25 has 1 < 1.8, le=0.5 has 2 >= 1.8:
#        0.25 + (0.5-0.25) * (1.8-1)/(2-1) = 0.25 + 0.25*0.8 = 0.45
#   p95: rank = 1.9: 0.25 + 0.25*0.9 = 0.475
#   p99: rank = 1.98: 0.25 + 0.25*0.98 = 0.495
#
# Inter-token latency: le 0.01:597 0.025:597 0.05:598 ... +Inf:598 (_count 598).
#   p50: rank 299 <= 597 in the first bucket (0, 0.01]: 0.01*299/597
#   p90: rank 538.2 -> 0.01*538.2/597;  p95: 568.1 -> 0.01*568.1/597;
#   p99: 592.02 -> 0.01*592.02/597
#
# E2E: le 1.5:0, 2.0:2, ... +Inf:2 -> both in (1.5, 2.0]:
#   p50 rank 1: 1.5 + 0.5*1/2 = 1.75; p90 rank 1.8: 1.5+0.5*0.9 = 1.95;
#   p95 1.5+0.5*0.95 = 1.975; p99 1.5+0.5*0.99 = 1.995
#
# Queue time: le 0.3:2 ... +Inf:2 -> both in (0, 0.3]:
#   p50 0.3*1/2 = 0.15; p90 0.3*1.8/2 = 0.27; p95 0.3*1.9/2 = 0.285;
#   p99 0.3*1.98/2 = 0.297

HAND_013 = {
    "ttft": {"count": 2.0, "p50": 0.02, "p90": 0.45, "p95": 0.475, "p99": 0.495},
    "itl": {
        "count": 598.0,
        "p50": 0.01 * 299 / 597,
        "p90": 0.01 * 538.2 / 597,
        "p95": 0.01 * 568.1 / 597,
        "p99": 0.01 * 592.02 / 597,
    },
    "e2e": {"count": 2.0, "p50": 1.75, "p90": 1.95, "p95": 1.975, "p99": 1.995},
    "queue_time": {"count": 2.0, "p50": 0.15, "p90": 0.27, "p95": 0.285, "p99": 0.297},
}


def test_013_by_hand(fixture_text):
    m = reference.vllm_signals(fixture_text(V013))["models"]
    assert list(m) == [QWEN3]
    s = m[QWEN3]
    assert s["engines"] == ["0"]
    assert s["queue_depth"] == 0.0
    assert s["running"] == 0.0
    assert s["kv_cache_usage"] == 0.0
    assert s["kv_cache_usage_source"] == "vllm:kv_cache_usage_perc"
    assert s["kv_capacity_tokens"] == 5943 * 16 == 95088
    assert s["prompt_tokens_total"] == 66.0
    assert s["generation_tokens_total"] == 600.0
    assert s["preemptions_total"] == 0.0
    assert s["requests_by_finished_reason"] == {"stop": 0.0, "length": 2.0, "abort": 0.0, "error": 0.0}
    for key, want in HAND_013.items():
        h = s["histograms"][key]
        assert h["status"] == "ok", key
        for k, v in want.items():
            assert h[k] == pytest.approx(v, rel=1e-12), (key, k)
    assert s["histograms"]["itl"]["metric"] == "vllm:inter_token_latency_seconds"
    assert s["histograms"]["ttft"]["sum"] == 0.4143967628479004


def test_013_ttft_buckets_read_by_hand(fixture_text):
    """The bucket values used above really are the fixture's."""
    text = fixture_text(V013)
    got = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^vllm:time_to_first_token_seconds_bucket\{engine="0",le="([^"]+)",model_name="Qwen/Qwen3-0.6B"\} (\S+)$',
            text,
            re.M,
        )
    }
    assert got["0.01"] == 0.0 and got["0.02"] == 1.0 and got["0.25"] == 1.0
    assert got["0.5"] == 2.0 and got["+Inf"] == 2.0 and len(got) == 23


def test_016_idle_server_is_idle_zero_not_missing(fixture_text):
    # The fixture: num_requests_waiting 0.0, num_requests_running 0.0, every histogram's +Inf
    # bucket 0.0 (nothing observed since start): idle, percentiles 0 (README "Idle is not
    # missing").
    s = reference.vllm_signals(fixture_text(V016))["models"]["Qwen/Qwen2.5-0.5B-Instruct"]
    assert s["kv_capacity_tokens"] == 101625 * 16
    assert s["prompt_tokens_total"] == 0.0
    assert (s["queue_depth"], s["running"]) == (0.0, 0.0)
    assert set(s["requests_by_finished_reason"]) == {"stop", "length", "abort", "error", "repetition"}
    for key in ("ttft", "itl", "e2e", "queue_time"):
        h = s["histograms"][key]
        assert h["status"] == "idle" and h["count"] == 0.0
        assert h["p50"] == 0.0 and h["p99"] == 0.0


def _body(waiting, running, inf_count, le_01=None):
    """A one-model vLLM body; ``waiting``/``running`` None leaves the gauge out; a TTFT
    histogram with ``inf_count`` observations, ``le_01`` of them <= 0.1 s (all by default)."""
    lines = []
    if waiting is not None:
        lines.append(f'vllm:num_requests_waiting{{model_name="m"}} {waiting}')
    if running is not None:
        lines.append(f'vllm:num_requests_running{{model_name="m"}} {running}')
    le = inf_count if le_01 is None else le_01
    lines += [
        f'vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} {le}',
        f'vllm:time_to_first_token_seconds_bucket{{le="1.0",model_name="m"}} {inf_count}',
        f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} {inf_count}',
        f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} {0.05 * inf_count}',
        f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {inf_count}',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "waiting, running, status",
    [
        (0, 0, "idle"),  # nothing to do, nothing observed since start
        (3, 0, "no_data"),  # requests waiting: their latency is not known yet
        (0, 2, "no_data"),  # requests running
        (0, None, "no_data"),  # running not exposed: not known to be idle
        (None, 0, "no_data"),
    ],
)
def test_idle_rule_one_scrape(waiting, running, status):
    h = reference.vllm_signals(_body(waiting, running, 0))["models"]["m"]["histograms"]["ttft"]
    assert h["status"] == status
    assert h["p95"] == (0.0 if status == "idle" else None)


def test_idle_rule_in_a_window():
    # 4 observations before the window, none in it.
    earlier = _body(0, 0, 4)
    idle = reference.vllm_window(earlier, _body(0, 0, 4), 15)["models"]["m"]["histograms"]["ttft"]
    assert (idle["status"], idle["count"], idle["p50"], idle["p99"]) == ("idle", 0.0, 0.0, 0.0)
    busy = reference.vllm_window(earlier, _body(5, 1, 4), 15)["models"]["m"]["histograms"]["ttft"]
    assert (busy["status"], busy["count"], busy["p50"]) == ("no_data", 0.0, None)
    # Observations in the window are never idle, even with nothing left to do: 2 new ones in
    # (0.1, 1.0]; p50 rank 1 of 2 -> 0.1 + 0.9 * 1/2 = 0.55.
    served = reference.vllm_window(earlier, _body(0, 0, 6, le_01=4), 15)["models"]["m"]
    assert served["histograms"]["ttft"]["status"] == "ok"
    assert served["histograms"]["ttft"]["p50"] == approx(0.55)


def test_070_v0_truncated(fixture_text):
    text = fixture_text(V070)
    st = reference.parse_stats(text)
    # prometheus_client 0.26.0 does NOT fail on the truncated file
    assert st["parser"].startswith("prometheus_client") and st["parser_error"] is None
    assert st["samples"] == 29 and st["families"] == 14
    assert st["histograms_without_inf"] == ["vllm:iteration_tokens_total"]
    s = reference.vllm_signals(text)["models"]["Qwen/Qwen2.5-Coder-1.5B-Instruct"]
    assert s["engines"] == []
    assert s["kv_cache_usage_source"] == "vllm:gpu_cache_usage_perc"
    assert s["kv_capacity_tokens"] == 81767 * 16  # cache_config_info has no model_name
    assert (s["prompt_tokens_total"], s["generation_tokens_total"]) == (148.0, 955.0)
    assert s["requests_by_finished_reason"] == {"stop": 4.0}
    assert all(h["status"] == "absent" for h in s["histograms"].values())


def test_truncated_ttft_reports_none(fixture_text):
    # drop the +Inf bucket and _count of TTFT from the real 0.13 text
    text = "\n".join(
        l
        for l in fixture_text(V013).splitlines()
        if not (l.startswith("vllm:time_to_first_token_seconds_bucket") and 'le="+Inf"' in l)
        and not l.startswith("vllm:time_to_first_token_seconds_count")
    )
    h = reference.vllm_signals(text)["models"][QWEN3]["histograms"]["ttft"]
    assert h["status"] == "truncated" and h["p50"] is None and h["count"] is None


# ---------------------------------------------------------------------------
# Parsers: prometheus_client vs the independent line parser
# ---------------------------------------------------------------------------

PINNED_COUNTS = {  # (samples, families) as reported by prometheus_client 0.26.0
    "vllm/vllm-0.13-v1-dynamo-qwen3-0.6b.txt": (346, 55),
    "vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt": (395, 83),
    "vllm/vllm-0.7.0-v0-aibrix-runtime-docs.txt": (29, 14),
    "dcgm/dcgm-exporter-GRID-A100-10C-vgpu-vks-k8s-ai-conformance.txt": (11, 11),
    "dcgm/dcgm-exporter-GRID-A100-40C-vgpu-vks-k8s-ai-conformance.txt": (11, 11),
    "dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt": (23, 23),
    "dcgm/dcgm-exporter-L40S-upcloud-k8s-ai-conformance.txt": (23, 23),
    "dcgm/dcgm-exporter-T4-ericsson-ccd-k8s-ai-conformance-nohelp.txt": (20, 20),
}


@pytest.mark.parametrize("path", all_fixture_params())
def test_parsers_agree_on_every_fixture(path):
    text = path.read_text()
    pc = reference.parse(text)
    assert pc.error is None, pc.error
    own, _ = reference.parse_lines(text)
    key = lambda s: (s.name, s.labels, s.value)  # noqa: E731
    assert sorted(map(key, pc.samples)) == sorted(map(key, own))
    sample_lines = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert len(pc.samples) == len(sample_lines)
    rel = f"{path.parent.name}/{path.name}"
    if rel in PINNED_COUNTS:
        assert (len(pc.samples), pc.families) == PINNED_COUNTS[rel]


def test_fallback_parser_used_when_prometheus_client_raises(fixture_text, monkeypatch):
    import prometheus_client.parser as pp

    text = fixture_text(V013)
    want = reference.vllm_signals(text)

    def boom(_text):
        raise ValueError("simulated parser failure")
        yield  # pragma: no cover

    monkeypatch.setattr(pp, "text_string_to_metric_families", boom)
    st = reference.parse_stats(text)
    assert st["parser"].startswith("fallback") and "simulated" in st["parser_error"]
    assert st["samples"] == 346
    assert reference.vllm_signals(text) == want


def test_line_parser_escapes_and_specials():
    p = reference.parse_sample_line('m{a="x\\"y",b="c\\\\d",c="e\\nf",le="+Inf"} NaN 123')
    assert p.labels == {"a": 'x"y', "b": "c\\d", "c": "e\nf", "le": "+Inf"}
    assert math.isnan(p.value) and p.timestamp == "123"
    assert reference.parse_sample_line("m -Inf").value == -INF


# ---------------------------------------------------------------------------
# Data-parallel engines (synthetic, built from the real 0.13 text)
# ---------------------------------------------------------------------------


def interleave_engine(text0: str, text1: str) -> str:
    """text0's lines, each sample line followed by text1's engine="1" copy."""
    l0, l1 = text0.splitlines(), text1.splitlines()
    assert len(l0) == len(l1)
    out = []
    for a, b in zip(l0, l1):
        out.append(a)
        if 'engine="0"' in b and not b.startswith("#"):
            out.append(b.replace('engine="0"', 'engine="1"'))
    return "\n".join(out) + "\n"


def test_dp_two_engines_sum_mean_and_bucket_sum(fixture_text):
    t0 = fixture_text(V013)
    t1, _ = make_series.transform(
        t0,
        {
            "observe": {"vllm:time_to_first_token_seconds": [(0.09, 6), (0.2, 3), (0.9, 1)]},
            "inc": {"vllm:prompt_tokens_total": 1500.0},
            "set": {"vllm:num_requests_waiting": 3.0, "vllm:kv_cache_usage_perc": 0.5},
        },
        reset=False,
        interval=15.0,
    )
    s = reference.vllm_signals(interleave_engine(t0, t1))["models"][QWEN3]
    assert s["engines"] == ["0", "1"]
    assert s["queue_depth"] == 0.0 + 3.0
    assert s["kv_cache_usage"] == pytest.approx((0.0 + 0.5) / 2)
    assert s["kv_capacity_tokens"] == 2 * 95088
    assert s["prompt_tokens_total"] == 66.0 + 1566.0
    # summed TTFT buckets (engine0 + engine1):
    #   le 0.01:0  0.02:1+1=2  0.04..0.08:2  0.1:1+7=8  0.25:1+10=11
    #   0.5:2+11=13  0.75:13  1.0:2+12=14 ... +Inf:14
    # p50 rank 7 in (0.08,0.1]: 0.08 + 0.02*(7-2)/(8-2) = 0.0966..
    # p90 rank 12.6 in (0.25,0.5]: 0.25 + 0.25*(12.6-11)/2 = 0.45
    # p99 rank 13.86 in (0.75,1.0]: 0.75 + 0.25*(13.86-13)/1 = 0.965
    h = s["histograms"]["ttft"]
    assert h["count"] == 14.0
    assert h["p50"] == approx(0.08 + 0.02 * 5 / 6)
    assert h["p90"] == approx(0.45)
    assert h["p99"] == approx(0.965)


def test_dp_reset_detected_per_engine_even_if_sum_grows(fixture_text):
    t0 = fixture_text(V013)
    big, _ = make_series.transform(t0, {"inc": {"vllm:prompt_tokens_total": 1500.0}}, False, 15.0)
    more, _ = make_series.transform(t0, {"inc": {"vllm:prompt_tokens_total": 2000.0}}, False, 15.0)
    small, _ = make_series.transform(t0, {"inc": {"vllm:prompt_tokens_total": 5.0}}, True, 15.0)
    earlier = interleave_engine(t0, big)  # engine0 66, engine1 1566 (sum 1632)
    later = interleave_engine(more, small)  # engine0 2066, engine1 5 (sum 2071 > 1632)
    w = reference.vllm_window(earlier, later, 15.0)["models"][QWEN3]
    assert w["counters"]["prompt_tokens_total"] == {"increase": None, "rate": None, "reset": True}
    assert w["any_reset"] is True


# ---------------------------------------------------------------------------
# dcgm-exporter
# ---------------------------------------------------------------------------


def test_dcgm_t4_nohelp(fixture_text):
    text = fixture_text(T4)
    st = reference.parse_stats(text)
    assert st["family_types"] == {"unknown": 20} and st["samples"] == 20
    g = reference.dcgm_gpus(text)["gpus"]
    assert list(g) == ["GPU-6d5c0ac5-74d7-3130-46f1-e93ed57f469a"]
    g = g["GPU-6d5c0ac5-74d7-3130-46f1-e93ed57f469a"]
    assert (g["gpu"], g["model_name"], g["hostname"]) == ("0", "Tesla T4", "cp-bm14r7")
    assert (g["gpu_util_percent"], g["fb_used_mib"], g["fb_free_mib"]) == (91.0, 5120.0, 9791.0)
    assert g["power_watts"] == 68.244 and g["gr_engine_active"] == 0.156205
    assert g["sm_active"] is None and g["pod"] is None


SYNTH_DCGM = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaa",pci_bus_id="00000000:31:00.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="n1",DCGM_FI_DRIVER_VERSION="580.1",container="vllm",namespace="default",pod="mistral-6cfb59d6cd-xbwgd"} 87
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-bbb",pci_bus_id="00000000:32:00.0",device="nvidia1",modelName="NVIDIA L40S",Hostname="n1",DCGM_FI_DRIVER_VERSION="580.1",container="",namespace="",pod=""} 0
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-ccc",pci_bus_id="00000000:33:00.0",device="nvidia2",modelName="NVIDIA A100",GPU_I_PROFILE="3g.40gb",GPU_I_ID="1",hostname="n1",container_name="c",pod_name="p",pod_namespace="ns"} 12
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-aaa",pci_bus_id="00000000:31:00.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="n1",DCGM_FI_DRIVER_VERSION="580.1",container="vllm",namespace="default",pod="mistral-6cfb59d6cd-xbwgd"} 40000
# TYPE DCGM_FI_PROF_SM_ACTIVE gauge
DCGM_FI_PROF_SM_ACTIVE{gpu="0",UUID="GPU-aaa",pci_bus_id="00000000:31:00.0",device="nvidia0",modelName="NVIDIA L40S",Hostname="n1",DCGM_FI_DRIVER_VERSION="580.1",container="vllm",namespace="default",pod="mistral-6cfb59d6cd-xbwgd"} 0.731000
# TYPE dcgm_fb_free gauge
dcgm_fb_free{gpu="3",uuid="GPU-ddd",device="nvidia3",modelName="TITAN V",container_name="",pod_name="",pod_namespace=""} 1234
"""


def test_dcgm_attribution_variants():
    g = reference.dcgm_gpus(SYNTH_DCGM)["gpus"]
    assert list(g) == ["GPU-aaa", "GPU-bbb", "GPU-ccc/1", "GPU-ddd"]
    a = g["GPU-aaa"]
    assert (a["pod"], a["namespace"], a["container"]) == ("mistral-6cfb59d6cd-xbwgd", "default", "vllm")
    assert (a["gpu_util_percent"], a["fb_used_mib"], a["sm_active"]) == (87.0, 40000.0, 0.731)
    b = g["GPU-bbb"]  # empty strings (older exporters) mean "no pod"
    assert (b["pod"], b["namespace"], b["container"]) == (None, None, None)
    c = g["GPU-ccc/1"]  # MIG + old label names + lower-case hostname
    assert (c["pod"], c["namespace"], c["container"], c["hostname"]) == ("p", "ns", "c", "n1")
    assert (c["gpu_instance_id"], c["gpu_instance_profile"]) == ("1", "3g.40gb")
    d = g["GPU-ddd"]  # 1.x names (--use-old-namespace)
    assert d["fb_free_mib"] == 1234.0 and d["pod"] is None and d["hostname"] is None


# ---------------------------------------------------------------------------
# make_series: the window values, by hand
# ---------------------------------------------------------------------------


def test_make_series_013_by_hand(fixtures_root, tmp_path):
    m = make_series.make_series(fixtures_root / V013, tmp_path)
    stem = "vllm-0.13-v1-dynamo-qwen3-0.6b"
    assert (tmp_path / f"{stem}.earlier.prom").read_text() == (fixtures_root / V013).read_text()
    later = (tmp_path / f"{stem}.later.prom").read_text()
    assert len(later.splitlines()) == 456
    w = m["expected"]["later"]["models"][QWEN3]
    assert m["interval_seconds"] == 15.0
    # gauges are the later values that were set
    assert (w["queue_depth"], w["running"], w["kv_cache_usage"]) == (3.0, 5.0, 0.42)
    c = w["counters"]
    assert c["prompt_tokens_total"] == {"increase": 1500.0, "rate": 100.0, "reset": False}
    assert c["generation_tokens_total"] == {"increase": 3000.0, "rate": 200.0, "reset": False}
    assert c["preemptions_total"]["rate"] == approx(2 / 15)
    assert c["requests_by_finished_reason"]["stop"]["rate"] == approx(10 / 15)
    assert c["requests_by_finished_reason"]["length"]["increase"] == 0.0
    h = w["histograms"]
    # TTFT window: 6 obs in (0.08,0.1], 3 in (0.1,0.25], 1 in (0.75,1.0]
    #   p50 rank 5: 0.08 + 0.02*5/6; p90 rank 9 = top of (0.1,0.25]: 0.25
    #   p95 rank 9.5: 0.75 + 0.25*0.5/1 = 0.875; p99 rank 9.9: 0.75+0.25*0.9 = 0.975
    assert h["ttft"]["count"] == 10.0
    assert [h["ttft"][k] for k in ("p50", "p90", "p95", "p99")] == [
        approx(0.08 + 0.02 * 5 / 6), approx(0.25), approx(0.875), approx(0.975)]
    # ITL: 100 obs in (0.01, 0.025]: 0.01 + 0.015*q
    assert [h["itl"][k] for k in ("p50", "p90", "p95", "p99")] == [
        approx(0.0175), approx(0.0235), approx(0.02425), approx(0.02485)]
    # E2E: 8 in (1.5,2.0], 2 in (2.5,5.0]:
    #   p50 rank 5: 1.5+0.5*5/8 = 1.8125; p90 rank 9: 2.5+2.5*(1/2) = 3.75
    #   p95 rank 9.5: 2.5+2.5*0.75 = 4.375; p99 rank 9.9: 2.5+2.5*0.95 = 4.875
    assert [h["e2e"][k] for k in ("p50", "p90", "p95", "p99")] == [
        approx(1.8125), approx(3.75), approx(4.375), approx(4.875)]
    # queue: 10 in (0, 0.3]: 0.3*q
    assert [h["queue_time"][k] for k in ("p50", "p90", "p95", "p99")] == [
        approx(0.15), approx(0.27), approx(0.285), approx(0.297)]
    assert w["any_reset"] is False and w["created_changed"] is False

    # cumulative percentiles of the later scrape: TTFT buckets now
    #   0.02:1 0.1:7 0.25:10 0.5:11 1.0:12 +Inf:12
    #   p50 rank 6 in (0.08,0.1]: 0.08 + 0.02*(6-1)/(7-1)
    lc = m["expected"]["later_cumulative"]["models"][QWEN3]["histograms"]["ttft"]
    assert lc["p50"] == approx(0.08 + 0.02 * 5 / 6)

    r = m["expected"]["reset"]["models"][QWEN3]
    rc = r["counters"]
    # prompt 66 -> 5 and generation 600 -> 6 decreased: reset, no rate
    assert rc["prompt_tokens_total"] == {"increase": None, "rate": None, "reset": True}
    assert rc["generation_tokens_total"]["reset"] is True
    # length 2 -> 0 decreased; stop 0 -> 1 did not (per-series detection)
    assert rc["requests_by_finished_reason"]["length"]["reset"] is True
    assert rc["requests_by_finished_reason"]["stop"] == {"increase": 1.0, "rate": approx(1 / 15), "reset": False}
    assert all(x["status"] == "reset" and x["p50"] is None for x in r["histograms"].values())
    assert r["any_reset"] is True and r["created_changed"] is True


def test_make_series_idle_reset_is_invisible_in_values(fixtures_root, tmp_path):
    m = make_series.make_series(fixtures_root / V016, tmp_path)
    r = m["expected"]["reset"]["models"]["Qwen/Qwen2.5-0.5B-Instruct"]
    # all counters were 0 before, so the restart shows only in *_created
    assert r["any_reset"] is False and r["created_changed"] is True
    assert r["counters"]["prompt_tokens_total"] == {"increase": 5.0, "rate": approx(5 / 15), "reset": False}
    # one TTFT observation of 0.03 in (0.02, 0.04]: p50 = 0.02 + 0.02*0.5 = 0.03
    assert r["histograms"]["ttft"]["p50"] == approx(0.03)


def test_make_series_refuses_repo_outdir(fixtures_root):
    with pytest.raises(SystemExit):
        make_series.main([str(fixtures_root / V013), str(reference.REPO_ROOT / "tmp-out")])


def test_prometheus_client_counter_rename_quirk(fixture_text):
    # "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" with samples named
    # without _total: prometheus_client reports them as ..._total; reference.parse
    # maps them back to the wire name and records the rename.
    text = fixture_text("dcgm/dcgm-exporter-L4-kops-k8s-ai-conformance.txt")
    st = reference.parse_stats(text)
    assert st["prometheus_client_renamed"]["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total"] == (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    assert len(st["prometheus_client_renamed"]) == 4
    assert st["sample_names"]["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == 1
