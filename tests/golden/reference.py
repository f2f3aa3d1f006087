"""Independent reference implementation of inferscale's per-replica signals.

Written from the Prometheus text-format / PromQL semantics and the vLLM and
dcgm-exporter metric descriptions in ``shared/fixtures/METRICS-REFERENCE.md``,
WITHOUT looking at the Rust code: its only purpose is to produce expected
values for golden tests.

Parsing goes through ``prometheus_client.parser.text_string_to_metric_families``
(pinned in requirements.txt).  If that parser raises on an input, a small
independent line parser (``parse_lines``) is used instead and the result says
so in ``parser``.  The same line parser is also used to cross-check
prometheus_client on every fixture, and by ``make_series.py`` to rewrite sample
values in place.

Conventions of the returned documents (proposed JSON shape, see NOTES.md in
this folder):

* every value is a float exactly as exposed (``66.0``), except
  ``kv_capacity_tokens`` which is an int;
* "no value" is ``None`` (JSON ``null``), never 0 and never NaN;
* histogram percentiles carry a ``status``: ``ok`` | ``idle`` (zero
  observations and nothing waiting or running: percentiles ``0.0``, see
  ``apply_idle_rule``) | ``no_data`` (zero observations while requests wait or
  run: percentiles ``None``) | ``truncated`` (a series has no ``+Inf`` bucket) |
  ``absent`` (metric not exposed for that model) | ``reset`` (window only).
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

QUANTILES: Tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
QUANTILE_KEYS: Dict[float, str] = {0.5: "p50", 0.9: "p90", 0.95: "p95", 0.99: "p99"}

# --------------------------------------------------------------------------
# Locating the shared fixtures (never copied into the repo)
# --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``$INFERSCALE_SHARED`` or ``<repo>/../shared``."""
    env = os.environ.get("INFERSCALE_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def fixtures_dir() -> Path:
    return shared_dir() / "fixtures"


def fixture_files() -> List[Path]:
    """All ``.txt`` scrape fixtures (vllm/ and dcgm/), sorted; [] if absent."""
    d = fixtures_dir()
    if not d.is_dir():
        return []
    return sorted(list((d / "vllm").glob("*.txt")) + list((d / "dcgm").glob("*.txt")))


def fixture_kind(path: Path | str) -> str:
    """``vllm`` or ``dcgm`` from the fixture folder name (or file content)."""
    p = Path(path)
    if p.parent.name in ("vllm", "dcgm"):
        return p.parent.name
    text = p.read_text()
    return "vllm" if "vllm:" in text else "dcgm"


# --------------------------------------------------------------------------
# Samples and parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Tuple[Tuple[str, str], ...]  # sorted (name, value) pairs
    value: float

    @property
    def ldict(self) -> Dict[str, str]:
        return dict(self.labels)


def _freeze(labels: Dict[str, str]) -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class LineParseError(ValueError):
    pass


_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass
class ParsedLine:
    """One sample line of the text format, with the span of its value token."""

    name: str
    labels: Dict[str, str]
    value: float
    value_span: Tuple[int, int]
    timestamp: Optional[str] = None


def parse_sample_line(line: str) -> ParsedLine:
    """Parse ``name{l="v",...} value [timestamp]`` (text format 0.0.4)."""
    m = _NAME_RE.match(line)
    if not m:
        raise LineParseError(f"no metric name: {line!r}")
    name, i, n = m.group(0), m.end(), len(line)
    labels: Dict[str, str] = {}
    if i < n and line[i] == "{":
        i += 1
        while True:
            while i < n and line[i] in " \t":
                i += 1
            if i >= n:
                raise LineParseError(f"unterminated label set: {line!r}")
            if line[i] == "}":
                i += 1
                break
            lm = _LABEL_NAME_RE.match(line, i)
            if not lm:
                raise LineParseError(f"bad label name at {i}: {line!r}")
            lname, i = lm.group(0), lm.end()
            while i < n and line[i] in " \t":
                i += 1
            if i >= n or line[i] != "=":
                raise LineParseError(f"expected '=' at {i}: {line!r}")
            i += 1
            while i < n and line[i] in " \t":
                i += 1
            if i >= n or line[i] != '"':
                raise LineParseError(f"expected '\"' at {i}: {line!r}")
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise LineParseError(f"unterminated label value: {line!r}")
                c = line[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise LineParseError(f"dangling escape: {line!r}")
                    buf.append(_ESCAPES.get(line[i + 1], "\\" + line[i + 1]))
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            if lname in labels:
                raise LineParseError(f"duplicate label {lname}: {line!r}")
            labels[lname] = "".join(buf)
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] == ",":
                i += 1
            elif i < n and line[i] == "}":
                continue
            else:
                raise LineParseError(f"expected ',' or '}}' at {i}: {line!r}")
    if i >= n or line[i] not in " \t":
        raise LineParseError(f"expected whitespace before value: {line!r}")
    while i < n and line[i] in " \t":
        i += 1
    j = i
    while j < n and line[j] not in " \t":
        j += 1
    tok = line[i:j]
    try:
        value = float(tok)  # accepts NaN, +Inf, -Inf
    except ValueError as e:
        raise LineParseError(f"bad value {tok!r}: {line!r}") from e
    rest = line[j:].strip()
    return ParsedLine(name, labels, value, (i, j), rest or None)


def parse_lines(text: str) -> Tuple[List[Sample], Dict[str, str]]:
    """Independent minimal parser: samples plus ``# TYPE`` declarations."""
    samples: List[Sample] = []
    types: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        p = parse_sample_line(line)
        samples.append(Sample(p.name, _freeze(p.labels), p.value))
    return samples, types


def _prometheus_client_version() -> str:
    try:
        from importlib.metadata import version

        return version("prometheus_client")
    except Exception:  # pragma: no cover
        return "unknown"


def _family_of(sample_name: str, types: Dict[str, str]) -> str:
    """Family for the fallback parser (suffix rules of the text format)."""
    if sample_name in types:
        return sample_name
    for suf, kinds in (
        ("_bucket", ("histogram",)),
        ("_count", ("histogram", "summary")),
        ("_sum", ("histogram", "summary")),
        ("_total", ("counter",)),
        ("_created", ("counter", "histogram", "summary")),
    ):
        if sample_name.endswith(suf):
            base = sample_name[: -len(suf)]
            if types.get(base) in kinds:
                return base
    return sample_name


@dataclass
class Parsed:
    samples: List[Sample]
    parser: str
    families: int
    family_types: Dict[str, int]
    families_with_samples: int
    error: Optional[str] = None
    # prometheus_client sample name -> wire name, where they differ (see parse)
    renamed: Dict[str, str] = field(default_factory=dict)


def parse(text: str) -> Parsed:
    """prometheus_client first; the independent line parser if it raises."""
    try:
        from prometheus_client.parser import text_string_to_metric_families

        fams = list(text_string_to_metric_families(text))
        # Quirk: for a family declared "# TYPE X counter" whose wire samples
        # are named X (no _total, e.g. dcgm-exporter's
        # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION), prometheus_client reports the
        # sample as X_total.  Map such names back to what is on the wire.
        wire = _wire_names(text)
        renamed: Dict[str, str] = {}
        samples = []
        for f in fams:
            for s in f.samples:
                name = s.name
                if name not in wire and name.endswith("_total") and name[:-6] in wire:
                    renamed[name] = name[:-6]
                    name = name[:-6]
                samples.append(Sample(name, _freeze(dict(s.labels)), float(s.value)))
        ftypes: Dict[str, int] = defaultdict(int)
        for f in fams:
            ftypes[f.type] += 1
        return Parsed(
            samples,
            f"prometheus_client {_prometheus_client_version()}",
            len(fams),
            dict(sorted(ftypes.items())),
            sum(1 for f in fams if f.samples),
            renamed=dict(sorted(renamed.items())),
        )
    except Exception as e:  # fall back, and say so
        samples, types = parse_lines(text)
        fams = OrderedDict()
        for t, k in types.items():
            fams[t] = k
        for s in samples:
            fam = _family_of(s.name, types)
            fams.setdefault(fam, "unknown")
        with_samples = {_family_of(s.name, types) for s in samples}
        ftypes = defaultdict(int)
        for k in fams.values():
            ftypes[k] += 1
        return Parsed(
            samples,
            "fallback line parser (prometheus_client raised)",
            len(fams),
            dict(sorted(ftypes.items())),
            len(with_samples),
            error=f"{type(e).__name__}: {e}",
        )


def _wire_names(text: str) -> set:
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            m = _NAME_RE.match(line)
            if m:
                names.add(m.group(0))
    return names


def parse_stats(text: str) -> dict:
    """Sample/family counts as seen by prometheus_client (or the fallback)."""
    p = parse(text)
    names: Dict[str, int] = defaultdict(int)
    for s in p.samples:
        names[s.name] += 1
    return {
        "parser": p.parser,
        "parser_error": p.error,
        "samples": len(p.samples),
        "families": p.families,
        "families_with_samples": p.families_with_samples,
        "family_types": p.family_types,
        "sample_names": dict(sorted(names.items())),
        "prometheus_client_renamed": p.renamed,
        "histograms_without_inf": histograms_without_inf(p.samples),
    }


def histograms_without_inf(samples: Sequence[Sample]) -> List[str]:
    """Histogram base names having a series with buckets but no +Inf bucket."""
    seen: Dict[Tuple[str, tuple], bool] = {}
    for s in samples:
        if s.name.endswith("_bucket"):
            d = s.ldict
            if "le" not in d:
                continue
            key = (s.name[: -len("_bucket")], _freeze({k: v for k, v in d.items() if k != "le"}))
            seen[key] = seen.get(key, False) or math.isinf(float(d["le"]))
    return sorted({k[0] for k, has_inf in seen.items() if not has_inf})


# --------------------------------------------------------------------------
# histogram_quantile (PromQL classic-histogram semantics)
# --------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[Tuple[float, float]]) -> float:
    """PromQL ``histogram_quantile`` over classic buckets.

    ``buckets``: (upper_bound, cumulative_count) pairs, any order, +Inf
    included.  Mirrors Prometheus' documented semantics (functions docs and
    promql/quantile.go ``bucketQuantile``):

    * q is NaN -> NaN; q < 0 -> -Inf; q > 1 -> +Inf;
    * sort by upper bound; highest bound not +Inf -> NaN;
    * buckets with the same bound are merged (counts added);
    * cumulative counts are made monotonic (float noise <= 1e-12 relative is
      flattened first, then any decrease is lifted to the running maximum);
    * fewer than 2 buckets -> NaN; count of the +Inf bucket == 0 -> NaN;
    * rank = q * total; b = first i in [0, len-2] with count_i >= rank, else
      len-1; b == len-1 -> upper bound of the second-highest bucket;
      b == 0 and bound_0 <= 0 -> bound_0; else linear interpolation between
      bound_{b-1} (0 for b == 0) and bound_b.
    * Note: q == 0 with an EMPTY first bucket of positive bound gives
      0 * (0/0) = NaN in Prometheus (Go float division); reproduced here.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bs = sorted(((float(u), float(c)) for u, c in buckets), key=lambda b: b[0])
    if not bs or not (math.isinf(bs[-1][0]) and bs[-1][0] > 0):
        return math.nan
    # coalesce equal upper bounds
    merged: List[List[float]] = []
    for u, c in bs:
        if merged and merged[-1][0] == u:
            merged[-1][1] += c
        else:
            merged.append([u, c])
    # flatten tiny float-precision deltas (tolerance 1e-12 relative)
    prev = merged[0][1]
    for i in range(1, len(merged)):
        cur = merged[i][1]
        delta = abs(cur - prev)
        if delta == 0:
            continue
        if cur != 0 and delta / cur <= 1e-12:
            merged[i][1] = prev
        else:
            prev = cur
    # force monotonic (envelope)
    mx = merged[0][1]
    for i in range(1, len(merged)):
        if merged[i][1] > mx:
            mx = merged[i][1]
        elif merged[i][1] < mx:
            merged[i][1] = mx
    if len(merged) < 2:
        return math.nan
    total = merged[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = len(merged) - 1
    for i in range(len(merged) - 1):
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    if count == 0:  # only reachable for rank == 0 (q == 0): Go gives 0/0 = NaN
        return math.nan
    return start + (end - start) * (rank / count)


def _none_if_nan(x: float) -> Optional[float]:
    return None if (x is None or math.isnan(x) or math.isinf(x)) else x


def window_quantile(
    q: float,
    buckets_earlier: Iterable[Tuple[float, float]],
    buckets_later: Iterable[Tuple[float, float]],
) -> Optional[float]:
    """Quantile of the observations made between two scrapes.

    Bucket deltas (later - earlier) per upper bound.  ``None`` when the bucket
    layouts differ, when any bucket decreased (counter reset), when the window
    holds zero observations, or when the quantile is otherwise undefined.
    """
    e = _bucket_map(buckets_earlier)
    l = _bucket_map(buckets_later)
    if set(e) != set(l):
        return None
    deltas = []
    for ub in l:
        d = l[ub] - e[ub]
        if d < 0:
            return None
        deltas.append((ub, d))
    if not any(math.isinf(ub) for ub, _ in deltas):
        return None
    if dict(deltas)[math.inf] == 0:
        return None
    return _none_if_nan(histogram_quantile(q, deltas))


def _bucket_map(buckets: Iterable[Tuple[float, float]]) -> Dict[float, float]:
    m: Dict[float, float] = defaultdict(float)
    for u, c in buckets:
        m[float(u)] += float(c)
    return dict(m)


# --------------------------------------------------------------------------
# vLLM signals
# --------------------------------------------------------------------------

HISTOGRAMS: Dict[str, Tuple[str, ...]] = OrderedDict(
    [
        ("ttft", ("vllm:time_to_first_token_seconds",)),
        ("itl", ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")),
        ("e2e", ("vllm:e2e_request_latency_seconds",)),
        ("queue_time", ("vllm:request_queue_time_seconds",)),
    ]
)
COUNTERS: Dict[str, str] = OrderedDict(
    [
        ("prompt_tokens_total", "vllm:prompt_tokens_total"),
        ("generation_tokens_total", "vllm:generation_tokens_total"),
        ("preemptions_total", "vllm:num_preemptions_total"),
    ]
)
REQUEST_SUCCESS = "vllm:request_success_total"
KV_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
CACHE_CONFIG = "vllm:cache_config_info"


def _models(samples: Sequence[Sample]) -> List[str]:
    return sorted(
        {
            s.ldict["model_name"]
            for s in samples
            if s.name.startswith("vllm:") and "model_name" in s.ldict
        }
    )


def _series(samples: Sequence[Sample], name: str, model: str) -> List[Sample]:
    return [s for s in samples if s.name == name and s.ldict.get("model_name") == model]


def _hist_series(
    samples: Sequence[Sample], base: str, model: str
) -> Dict[tuple, Dict[str, object]]:
    """series key (labels minus le) -> {"buckets": {ub: count}, "count", "sum"}."""
    out: Dict[tuple, Dict[str, object]] = {}
    for s in samples:
        if s.ldict.get("model_name") != model:
            continue
        d = s.ldict
        if s.name == base + "_bucket" and "le" in d:
            key = _freeze({k: v for k, v in d.items() if k != "le"})
            ent = out.setdefault(key, {"buckets": {}, "count": None, "sum": None})
            ub = float(d["le"])
            ent["buckets"][ub] = ent["buckets"].get(ub, 0.0) + s.value
        elif s.name in (base + "_count", base + "_sum"):
            key = _freeze(d)
            ent = out.setdefault(key, {"buckets": {}, "count": None, "sum": None})
            ent["count" if s.name.endswith("_count") else "sum"] = s.value
    return out


def _pick_hist_metric(samples: Sequence[Sample], names: Sequence[str], model: str) -> Optional[str]:
    for n in names:
        if _hist_series(samples, n, model):
            return n
    return None


def _percentiles_from(buckets: Dict[float, float]) -> Dict[str, Optional[float]]:
    return {
        QUANTILE_KEYS[q]: _none_if_nan(histogram_quantile(q, buckets.items())) for q in QUANTILES
    }


def _empty_pcts() -> Dict[str, Optional[float]]:
    return {QUANTILE_KEYS[q]: None for q in QUANTILES}


def _hist_summary(samples: Sequence[Sample], names: Sequence[str], model: str) -> dict:
    metric = _pick_hist_metric(samples, names, model)
    doc = {"metric": metric, "status": "absent", "count": None, "sum": None}
    doc.update(_empty_pcts())
    if metric is None:
        return doc
    series = _hist_series(samples, metric, model)
    summed: Dict[float, float] = defaultdict(float)
    total_sum = 0.0
    have_sum = True
    truncated = False
    for ent in series.values():
        if not any(math.isinf(u) for u in ent["buckets"]):
            truncated = True
        for u, c in ent["buckets"].items():
            summed[u] += c
        if ent["sum"] is None:
            have_sum = False
        else:
            total_sum += ent["sum"]
    if truncated:
        doc["status"] = "truncated"
        return doc
    doc["count"] = summed[math.inf]
    doc["sum"] = total_sum if have_sum else None
    if summed[math.inf] == 0:
        doc["status"] = "no_data"
        return doc
    doc["status"] = "ok"
    doc.update(_percentiles_from(summed))
    return doc


def _kv_capacity(samples: Sequence[Sample], models: Sequence[str]) -> Dict[str, Optional[int]]:
    """model -> sum over cache_config_info series of num_gpu_blocks*block_size.

    A series without model_name is attributed to the only model of the scrape
    (V0 and V1 both omit model_name on this gauge); with several models it is
    unattributable and ignored.  Non-numeric label values ("None") -> None.
    """
    caps: Dict[str, Optional[int]] = {}
    for s in samples:
        if s.name != CACHE_CONFIG:
            continue
        d = s.ldict
        model = d.get("model_name")
        if model is None:
            if len(models) != 1:
                continue
            model = models[0]
        try:
            tokens: Optional[int] = int(d["num_gpu_blocks"]) * int(d["block_size"])
        except (KeyError, ValueError):
            tokens = None
        if model in caps:
            prev = caps[model]
            caps[model] = None if (prev is None or tokens is None) else prev + tokens
        else:
            caps[model] = tokens
    return caps


def apply_idle_rule(model_doc: dict) -> None:
    """"Idle is not missing" (README, Signals), applied to one model's document in place.

    The rule as documented: a replica with no observation of a latency histogram in the
    window, and nothing waiting and nothing running at its newest scrape (queue depth and
    running both exposed and 0), reports that histogram's percentiles as 0: no request
    waited.  With requests waiting or running (or either gauge not exposed) and no
    observation, the latency stays missing.  ``model_doc`` holds the newest scrape's
    ``queue_depth`` and ``running`` and the window's (or, for one scrape, the cumulative)
    ``histograms``; a ``no_data`` histogram becomes ``idle`` with every percentile ``0.0``.
    """
    if model_doc["queue_depth"] != 0 or model_doc["running"] != 0:
        return  # None (not exposed) is not 0 either
    for h in model_doc["histograms"].values():
        if h["status"] == "no_data":
            h["status"] = "idle"
            for q in QUANTILES:
                h[QUANTILE_KEYS[q]] = 0.0


def vllm_signals_from_samples(samples: Sequence[Sample]) -> dict:
    models = _models(samples)
    caps = _kv_capacity(samples, models)
    out: Dict[str, dict] = OrderedDict()
    for m in models:
        engines = sorted(
            {s.ldict["engine"] for s in samples if s.ldict.get("model_name") == m and "engine" in s.ldict}
        )

        def gsum(name: str) -> Optional[float]:
            ss = _series(samples, name, m)
            return sum(s.value for s in ss) if ss else None

        kv_src = next((n for n in KV_USAGE_NAMES if _series(samples, n, m)), None)
        kv = None
        if kv_src:
            vals = [s.value for s in _series(samples, kv_src, m)]
            kv = sum(vals) / len(vals)
        reasons: Dict[str, float] = defaultdict(float)
        for s in _series(samples, REQUEST_SUCCESS, m):
            reasons[s.ldict.get("finished_reason", "")] += s.value
        doc = OrderedDict(
            engines=engines,
            queue_depth=gsum("vllm:num_requests_waiting"),
            running=gsum("vllm:num_requests_running"),
            kv_cache_usage=kv,
            kv_cache_usage_source=kv_src,
            kv_capacity_tokens=caps.get(m),
        )
        for key, name in COUNTERS.items():
            doc[key] = gsum(name)
        doc["requests_by_finished_reason"] = dict(sorted(reasons.items())) if reasons else None
        doc["histograms"] = OrderedDict(
            (key, _hist_summary(samples, names, m)) for key, names in HISTOGRAMS.items()
        )
        # One scrape: the histograms are cumulative since start; nothing observed since then
        # with nothing to do is idle too.
        apply_idle_rule(doc)
        out[m] = doc
    return {"models": out}


def vllm_signals(text: str) -> dict:
    """Per model_name signals (summed over ``engine``), see module docstring."""
    return vllm_signals_from_samples(parse(text).samples)


# --------------------------------------------------------------------------
# Two scrapes: rates and windowed percentiles
# --------------------------------------------------------------------------


def _counter_window(e_series: List[Sample], l_series: List[Sample], interval: float) -> dict:
    """Sum of per-series increases; any decrease or vanished/new series -> reset."""
    e = {s.labels: s.value for s in e_series}
    l = {s.labels: s.value for s in l_series}
    if not e and not l:
        return {"increase": None, "rate": None, "reset": False}
    reset = set(e) != set(l) or any(l[k] < e[k] for k in l if k in e)
    if reset:
        return {"increase": None, "rate": None, "reset": True}
    inc = sum(l[k] - e[k] for k in l)
    return {"increase": inc, "rate": inc / interval, "reset": False}


def _hist_window(e_samples, l_samples, names, model) -> dict:
    metric = _pick_hist_metric(l_samples, names, model)
    doc = {"metric": metric, "status": "absent", "count": None}
    doc.update(_empty_pcts())
    if metric is None:
        return doc
    es = _hist_series(e_samples, metric, model)
    ls = _hist_series(l_samples, metric, model)
    if any(not any(math.isinf(u) for u in ent["buckets"]) for ent in list(es.values()) + list(ls.values())):
        doc["status"] = "truncated"
        return doc
    if set(es) != set(ls):
        doc["status"] = "reset"
        return doc
    sum_e: Dict[float, float] = defaultdict(float)
    sum_l: Dict[float, float] = defaultdict(float)
    for key, lent in ls.items():
        eb, lb = es[key]["buckets"], lent["buckets"]
        # reset detection per series (engine) before summing over engines
        if set(eb) != set(lb) or any(lb[u] < eb[u] for u in lb):
            doc["status"] = "reset"
            return doc
        for u in lb:
            sum_e[u] += eb[u]
            sum_l[u] += lb[u]
    doc["count"] = sum_l[math.inf] - sum_e[math.inf]
    if doc["count"] == 0:
        doc["status"] = "no_data"
        return doc
    doc["status"] = "ok"
    for q in QUANTILES:
        doc[QUANTILE_KEYS[q]] = window_quantile(q, sum_e.items(), sum_l.items())
    return doc


def _created_values(samples: Sequence[Sample], model: str) -> Dict[tuple, float]:
    return {
        (s.name, s.labels): s.value
        for s in samples
        if s.name.endswith("_created") and s.ldict.get("model_name") == model
    }


def vllm_window(text_earlier: str, text_later: str, interval_seconds: float) -> dict:
    """Rates (increase / interval) and windowed percentiles between scrapes.

    Gauges (queue, running, KV usage) are the later scrape's values.  Reset
    detection is per underlying series (each engine, each finished_reason):
    any decrease, or a series appearing/vanishing, makes that signal
    ``reset: true`` with ``increase``/``rate`` ``None`` (histograms:
    ``status: "reset"``, percentiles ``None``).  ``created_changed`` reports
    whether any ``*_created`` timestamp differs (informational: a restart that
    went unnoticed by the values, e.g. an idle server, shows up only there).
    """
    e_samples = parse(text_earlier).samples
    l_samples = parse(text_later).samples
    later = vllm_signals_from_samples(l_samples)["models"]
    out: Dict[str, dict] = OrderedDict()
    for m in _models(l_samples):
        doc = OrderedDict()
        ld = later[m]
        for k in ("queue_depth", "running", "kv_cache_usage", "kv_capacity_tokens"):
            doc[k] = ld[k]
        counters = OrderedDict()
        for key, name in COUNTERS.items():
            counters[key] = _counter_window(
                _series(e_samples, name, m), _series(l_samples, name, m), interval_seconds
            )
        by_reason = OrderedDict()
        e_rs = _series(e_samples, REQUEST_SUCCESS, m)
        l_rs = _series(l_samples, REQUEST_SUCCESS, m)
        for r in sorted({s.ldict.get("finished_reason", "") for s in e_rs + l_rs}):
            by_reason[r] = _counter_window(
                [s for s in e_rs if s.ldict.get("finished_reason", "") == r],
                [s for s in l_rs if s.ldict.get("finished_reason", "") == r],
                interval_seconds,
            )
        counters["requests_by_finished_reason"] = by_reason
        doc["counters"] = counters
        doc["histograms"] = OrderedDict(
            (key, _hist_window(e_samples, l_samples, names, m)) for key, names in HISTOGRAMS.items()
        )
        apply_idle_rule(doc)  # with the later scrape's queue_depth and running, set above
        ec, lc = _created_values(e_samples, m), _created_values(l_samples, m)
        doc["created_changed"] = any(lc.get(k) != v for k, v in ec.items()) if ec and lc else None
        resets = [c["reset"] for k, c in counters.items() if k != "requests_by_finished_reason"]
        resets += [c["reset"] for c in by_reason.values()]
        resets += [h["status"] == "reset" for h in doc["histograms"].values()]
        doc["any_reset"] = any(resets)
        out[m] = doc
    return {"interval_seconds": float(interval_seconds), "models": out}


# --------------------------------------------------------------------------
# dcgm-exporter
# --------------------------------------------------------------------------

DCGM_FIELDS: Dict[str, Tuple[str, ...]] = OrderedDict(
    [
        ("gpu_util_percent", ("DCGM_FI_DEV_GPU_UTIL", "dcgm_gpu_utilization")),
        ("fb_used_mib", ("DCGM_FI_DEV_FB_USED", "dcgm_fb_used")),
        ("fb_free_mib", ("DCGM_FI_DEV_FB_FREE", "dcgm_fb_free")),
        ("power_watts", ("DCGM_FI_DEV_POWER_USAGE", "dcgm_power_usage")),
        ("gr_engine_active", ("DCGM_FI_PROF_GR_ENGINE_ACTIVE",)),
        ("sm_active", ("DCGM_FI_PROF_SM_ACTIVE",)),
    ]
)
_K8S_LABELS = (
    ("pod", ("pod", "pod_name")),
    ("namespace", ("namespace", "pod_namespace")),
    ("container", ("container", "container_name")),
)


def dcgm_key(d: Dict[str, str]) -> Optional[str]:
    """GPU key: UUID (or 1.x ``uuid``); MIG instances get ``UUID/GPU_I_ID``."""
    uuid = d.get("UUID", d.get("uuid"))
    if uuid is None:
        return None
    gi = d.get("GPU_I_ID")
    return f"{uuid}/{gi}" if gi not in (None, "") else uuid


def dcgm_gpus_from_samples(samples: Sequence[Sample]) -> dict:
    name_to_field = {n: f for f, names in DCGM_FIELDS.items() for n in names}
    gpus: Dict[str, dict] = {}
    for s in samples:
        d = s.ldict
        key = dcgm_key(d)
        if key is None or not (s.name.startswith("DCGM_") or s.name.startswith("dcgm_")):
            continue
        g = gpus.get(key)
        if g is None:
            g = OrderedDict(
                uuid=d.get("UUID", d.get("uuid")),
                gpu=d.get("gpu"),
                gpu_instance_id=d.get("GPU_I_ID") or None,
                gpu_instance_profile=d.get("GPU_I_PROFILE") or None,
                model_name=d.get("modelName"),
                hostname=None,
                pod=None,
                namespace=None,
                container=None,
            )
            g.update((f, None) for f in DCGM_FIELDS)
            gpus[key] = g
        host = d.get("Hostname", d.get("hostname"))
        if g["hostname"] is None and host:
            g["hostname"] = host
        for out_key, names in _K8S_LABELS:
            for n in names:
                if g[out_key] is None and d.get(n):  # empty string == absent
                    g[out_key] = d[n]
        f = name_to_field.get(s.name)
        if f is not None:
            # the new name wins over the 1.x alias if both were present
            if g[f] is None or s.name == DCGM_FIELDS[f][0]:
                g[f] = s.value
    return {"gpus": OrderedDict(sorted(gpus.items(), key=lambda kv: (_gpu_sort(kv[1]), kv[0])))}


def _gpu_sort(g: dict):
    try:
        return int(g["gpu"])
    except (TypeError, ValueError):
        return 1 << 30


def dcgm_gpus(text: str) -> dict:
    """Per GPU (UUID) identity, k8s attribution and the selected gauges."""
    return dcgm_gpus_from_samples(parse(text).samples)


# --------------------------------------------------------------------------
# Whole-document expected values
# --------------------------------------------------------------------------


def expected_document(path: Path | str, kind: Optional[str] = None) -> dict:
    """Expected values for one scrape file (the shape the adapter test uses)."""
    p = Path(path)
    text = p.read_text()
    kind = kind or fixture_kind(p)
    p_parsed = parse(text)
    doc = OrderedDict(
        source=_rel(p),
        kind=kind,
        parse=parse_stats(text),
    )
    if kind == "vllm":
        doc["vllm"] = vllm_signals_from_samples(p_parsed.samples)
    else:
        doc["dcgm"] = dcgm_gpus_from_samples(p_parsed.samples)
    return doc


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(fixtures_dir().resolve()))
    except ValueError:
        return p.name
