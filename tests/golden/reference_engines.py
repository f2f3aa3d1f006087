"""Independent reference for the SGLang and TGI profiles (issue 8 item 5).

Written from the engines' own documentation and the real scrapes in
``shared/fixtures/sglang`` and ``shared/fixtures/tgi`` (names, label sets and HELP texts as
exposed), NOT from the Rust code.  Arithmetic (histogram_quantile, window deltas) and the line
parser come from ``reference.py``.

Rules, with where each comes from:

SGLang (docs/references/production_metrics.md samples of 0.3.5, 0.4.0, 0.4.3; a real 0.5.x
scrape):
* model = the ``model_name`` label; 0.3.5 labels engine series ``name=`` instead.  Only the
  families below are read, so ``func_latency_seconds{name="generate_request"}`` (0.4) never
  names a model.
* queue depth = ``sglang:num_queue_reqs`` ("The number of requests in the waiting queue",
  0.4+), else ``sglang:num_requests_waiting`` ("Number of requests waiting to be processed",
  0.3.5); running = ``num_running_reqs`` (0.4+) else ``num_requests_running`` (0.3.5);
  summed over series (data-parallel ranks).
* KV usage = ``sglang:token_usage`` (a 0-1 fraction in every sample: 0.01, 0.28), averaged
  over series.  KV capacity = ``sglang:max_total_num_tokens`` ("Maximum total number of
  tokens in the KV cache pool", 0.5.x; also in 0.3.5), summed; absent in 0.4.x.
* tokens = ``prompt_tokens_total``, ``generation_tokens_total`` counters.
* finished requests = ``sglang:num_requests_total`` ("Number of requests processed", 0.5.x);
  before that no request counter exists, and ``e2e_request_latency_seconds_count`` counts
  one observation per finished request (it equals ``request_prompt_tokens_count`` in 0.3.5).
* TTFT = ``time_to_first_token_seconds``; ITL = ``inter_token_latency_seconds`` (0.5.x) else
  ``time_per_output_token_seconds``; end-to-end = ``e2e_request_latency_seconds``; queue time
  = ``queue_time_seconds`` (0.5.x) else ``waiting_request_latency_seconds`` ("Histogram of
  request waiting time in seconds", 0.3.5); 0.4.x has none.

TGI (docs/source/reference/metrics.md, summarised with the code's labels in
``shared/fixtures/tgi/METRICS.md``; a real 3.x scrape):
* no model label: everything belongs to the unlabelled model ``""``.
* queue depth = ``tgi_queue_size`` ("Current queue size"); running = ``tgi_batch_current_size``
  ("Current batch size"); no KV usage or capacity metric.
* prompt tokens = ``tgi_request_input_length_sum`` ("Input token length per request",
  histogram: its sum is the total), generated = ``tgi_request_generated_tokens_sum``;
  finished requests = ``tgi_request_success`` ("Number of successful requests").
* no TTFT metric; ITL = ``tgi_request_mean_time_per_token_duration`` ("Mean time per token
  per request (inter-token latency)"); end-to-end = ``tgi_request_duration``; queue time =
  ``tgi_request_queue_duration``.

Document shape (same conventions as reference.py: None = no value, never 0):
  {"engine", "kv_capacity_tokens", "models": {model: {"queue_depth", "running",
   "kv_cache_usage", "prompt_tokens_total", "generation_tokens_total", "requests_total",
   "histograms": {"ttft"|"itl"|"e2e"|"queue_time": {"metric", "status", "count",
   "p50", "p90", "p95", "p99"}}}}}
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import reference

PCTS = {0.5: "p50", 0.9: "p90", 0.95: "p95", 0.99: "p99"}

SGLANG = {
    "engine": "sglang",
    "model_labels": ("model_name", "name"),
    "gauges": {
        "queue_depth": ("sglang:num_queue_reqs", "sglang:num_requests_waiting"),
        "running": ("sglang:num_running_reqs", "sglang:num_requests_running"),
    },
    "kv_usage": ("sglang:token_usage",),
    "capacity": ("sglang:max_total_num_tokens",),
    "counters": {
        "prompt_tokens_total": ("sglang:prompt_tokens_total",),
        "generation_tokens_total": ("sglang:generation_tokens_total",),
        "requests_total": ("sglang:num_requests_total", "sglang:e2e_request_latency_seconds_count"),
    },
    "histograms": {
        "ttft": ("sglang:time_to_first_token_seconds",),
        "itl": ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        "e2e": ("sglang:e2e_request_latency_seconds",),
        "queue_time": ("sglang:queue_time_seconds", "sglang:waiting_request_latency_seconds"),
    },
}

TGI = {
    "engine": "tgi",
    "model_labels": (),
    "gauges": {
        "queue_depth": ("tgi_queue_size",),
        "running": ("tgi_batch_current_size",),
    },
    "kv_usage": (),
    "capacity": (),
    "counters": {
        "prompt_tokens_total": ("tgi_request_input_length_sum",),
        "generation_tokens_total": ("tgi_request_generated_tokens_sum",),
        "requests_total": ("tgi_request_success",),
    },
    "histograms": {
        "ttft": (),
        "itl": ("tgi_request_mean_time_per_token_duration",),
        "e2e": ("tgi_request_duration",),
        "queue_time": ("tgi_request_queue_duration",),
    },
}

PROFILES = {"sglang": SGLANG, "tgi": TGI}


def engine_of(text: str) -> str:
    return "sglang" if "sglang:" in text else "tgi"


def _model(sample: reference.Sample, profile: dict) -> str:
    labels = sample.ldict
    for name in profile["model_labels"]:
        if name in labels:
            return labels[name]
    return ""


def _read_names(profile: dict) -> set:
    names = set(profile["kv_usage"]) | set(profile["capacity"])
    for group in ("gauges", "counters"):
        for names_ in profile[group].values():
            names |= set(names_)
    for names_ in profile["histograms"].values():
        for n in names_:
            names |= {n + "_bucket", n + "_count", n + "_sum"}
    return names


def _first_present(samples, names, model, profile) -> Optional[str]:
    present = {s.name for s in samples if _model(s, profile) == model}
    return next((n for n in names if n in present), None)


def _values(samples, name, model, profile) -> List[float]:
    return [s.value for s in samples if s.name == name and _model(s, profile) == model]


def _buckets(samples, name, model, profile) -> Dict[float, float]:
    """Cumulative buckets summed over the series of one model (data-parallel ranks)."""
    out: Dict[float, float] = defaultdict(float)
    for s in samples:
        if s.name == name + "_bucket" and _model(s, profile) == model:
            out[float(s.ldict["le"])] += s.value
    return dict(out)


def _hist(samples, names, model, profile) -> dict:
    name = next((n for n in names if _buckets(samples, n, model, profile)), None)
    doc = {"metric": name, "status": "absent", "count": None, **{k: None for k in PCTS.values()}}
    if name is None:
        return doc
    buckets = _buckets(samples, name, model, profile)
    if math.inf not in buckets:
        doc["status"] = "truncated"
        return doc
    doc["count"] = buckets[math.inf]
    doc["status"] = "ok" if buckets[math.inf] > 0 else "no_data"
    if doc["status"] == "ok":
        for q, key in PCTS.items():
            doc[key] = reference.histogram_quantile(q, buckets.items())
    return doc


def signals(text: str) -> dict:
    """One scrape of an SGLang or TGI server, read by the rules above."""
    profile = PROFILES[engine_of(text)]
    samples, _ = reference.parse_lines(text)
    samples = [s for s in samples if s.name in _read_names(profile)]
    models = sorted({_model(s, profile) for s in samples})
    capacity = [s.value for s in samples if s.name in profile["capacity"]]
    doc = {
        "engine": profile["engine"],
        "kv_capacity_tokens": sum(capacity) if capacity else None,
        "models": {},
    }
    for model in models:
        m = {}
        for key, names in profile["gauges"].items():
            name = _first_present(samples, names, model, profile)
            m[key] = sum(_values(samples, name, model, profile)) if name else None
        name = _first_present(samples, profile["kv_usage"], model, profile)
        usage = _values(samples, name, model, profile) if name else []
        m["kv_cache_usage"] = sum(usage) / len(usage) if usage else None
        for key, names in profile["counters"].items():
            name = _first_present(samples, names, model, profile)
            m[key] = sum(_values(samples, name, model, profile)) if name else None
        m["histograms"] = {k: _hist(samples, names, model, profile) for k, names in profile["histograms"].items()}
        doc["models"][model] = m
    return doc


def window(earlier: str, later: str, interval: float) -> dict:
    """Rates and window percentiles between two scrapes of one SGLang/TGI server."""
    profile = PROFILES[engine_of(later)]
    e_doc, l_doc = signals(earlier), signals(later)
    e_samples = [s for s in reference.parse_lines(earlier)[0] if s.name in _read_names(profile)]
    l_samples = [s for s in reference.parse_lines(later)[0] if s.name in _read_names(profile)]
    out = {"models": {}}
    for model, lm in l_doc["models"].items():
        em = e_doc["models"].get(model, {})
        w = {k: lm[k] for k in ("queue_depth", "running", "kv_cache_usage")}
        for key in profile["counters"]:
            a, b = em.get(key), lm[key]
            w[key] = None if a is None or b is None or b < a else (b - a) / interval
        w["histograms"] = {}
        for key, names in profile["histograms"].items():
            name = lm["histograms"][key]["metric"]
            doc = {"count": None, **{k: None for k in PCTS.values()}}
            if name:
                eb = _buckets(e_samples, name, model, profile)
                lb = _buckets(l_samples, name, model, profile)
                doc["count"] = lb.get(math.inf, 0) - eb.get(math.inf, 0)
                for q, k in PCTS.items():
                    doc[k] = reference.window_quantile(q, eb.items(), lb.items())
            w["histograms"][key] = doc
        out["models"][model] = w
    return out


def advance(text: str, observations: int = 5) -> str:
    """A later scrape of the same server: gauges changed, counters grown, and `observations`
    new observations in every histogram this reference reads (at a value in the middle of the
    histogram's second finite bucket, so no percentile lands on a bound)."""
    profile = PROFILES[engine_of(text)]
    gauges = {n: 3.0 + i for i, names in enumerate(profile["gauges"].values()) for n in names}
    counters = {n: 100.0 * (i + 1) for i, names in enumerate(profile["counters"].values()) for n in names if not n.endswith("_count")}
    samples, _ = reference.parse_lines(text)
    hist_names = [n for names in profile["histograms"].values() for n in names]
    at: Dict[str, float] = {}
    for name in hist_names:
        bounds = sorted({float(s.ldict["le"]) for s in samples if s.name == name + "_bucket"} - {math.inf})
        if len(bounds) >= 2:
            at[name] = (bounds[0] + bounds[1]) / 2 if bounds[0] > 0 else bounds[1] / 2
    # TGI/SGLang histograms whose `_count`/`_sum` are also read as counters move with them.
    lines = []
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if not stripped or stripped.startswith("#"):
            lines.append(line)
            continue
        p = reference.parse_sample_line(stripped)
        value = p.value
        if p.name in gauges:
            value = gauges[p.name]
        elif p.name in counters:
            value += counters[p.name]
        else:
            for name, v in at.items():
                if p.name == name + "_bucket" and float(p.labels["le"]) >= v:
                    value += observations
                elif p.name == name + "_count":
                    value += observations
                elif p.name == name + "_sum":
                    value += observations * v
        start, end = p.value_span
        lines.append(stripped[:start] + repr(float(value)) + stripped[end:] + line[len(stripped):])
    return "".join(lines)
