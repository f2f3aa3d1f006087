#!/usr/bin/env python3
"""Make synthetic two-scrape series from a real fixture.

For each FIXTURE this writes into OUTDIR (never into the repo):

  <stem>.earlier.prom  the fixture text, unchanged (so the pair is self-contained)
  <stem>.later.prom    the same scrape after known activity: observations added
                       to chosen histogram buckets, counters increased, gauges set
  <stem>.reset.prom    (vLLM only) a restarted server: every counter / histogram restarts from
                       zero plus a few small known increments, ``*_created`` moves
                       forward by the interval (skip with --no-reset)
  <stem>.series.json   what was changed, and the expected window values computed
                       by reference.py (rates = increase / interval seconds)

Only the value token of a sample line is rewritten; labels, ordering, comments
and all other bytes stay as in the fixture.

Usage:
  make_series.py [--interval S] [--no-defaults] [--no-reset]
                 [--observe METRIC=VxN[,VxN...]]... [--inc SEL=AMOUNT]... [--set SEL=VALUE]...
                 [--reset-observe ...]... [--reset-inc ...]... [--reset-set ...]...
                 FIXTURE [FIXTURE...] OUTDIR
  FIXTURE may be 'all' for every .txt fixture under $INFERSCALE_SHARED/fixtures.
  SEL is a metric name, optionally with label matchers: 'vllm:request_success_total{finished_reason=stop}'.
  Default scenario: vLLM fixtures get DEFAULT_LATER / DEFAULT_RESET below (see
  NOTES.md for the hand-computed window values on the 0.13 fixture); dcgm
  fixtures get DEFAULT_DCGM_LATER and no reset variant.
  --observe adds N observations of value V to every series of histogram METRIC
  (a value lands in every bucket with le >= V; _count += N; _sum += N*V).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

# Default scenario (vLLM).  Histogram specs name every historical alias; the
# ones absent from a fixture are reported as not applied.
DEFAULT_INTERVAL = 15.0
DEFAULT_LATER = {
    "observe": OrderedDict(
        [
            ("vllm:time_to_first_token_seconds", [(0.09, 6), (0.2, 3), (0.9, 1)]),
            ("vllm:inter_token_latency_seconds", [(0.02, 100)]),
            ("vllm:time_per_output_token_seconds", [(0.02, 100)]),
            ("vllm:e2e_request_latency_seconds", [(1.8, 8), (4.0, 2)]),
            ("vllm:request_queue_time_seconds", [(0.1, 10)]),
        ]
    ),
    "inc": OrderedDict(
        [
            ("vllm:prompt_tokens_total", 1500.0),
            ("vllm:generation_tokens_total", 3000.0),
            ("vllm:num_preemptions_total", 2.0),
            ("vllm:request_success_total{finished_reason=stop}", 10.0),
        ]
    ),
    "set": OrderedDict(
        [
            ("vllm:num_requests_waiting", 3.0),
            ("vllm:num_requests_running", 5.0),
            ("vllm:kv_cache_usage_perc", 0.42),
            ("vllm:gpu_cache_usage_perc", 0.42),
        ]
    ),
}
DEFAULT_RESET = {
    "observe": OrderedDict(
        [
            ("vllm:time_to_first_token_seconds", [(0.03, 1)]),
            ("vllm:inter_token_latency_seconds", [(0.02, 5)]),
            ("vllm:time_per_output_token_seconds", [(0.02, 5)]),
            ("vllm:e2e_request_latency_seconds", [(1.2, 1)]),
            ("vllm:request_queue_time_seconds", [(0.1, 1)]),
        ]
    ),
    "inc": OrderedDict(
        [
            ("vllm:prompt_tokens_total", 5.0),
            ("vllm:generation_tokens_total", 6.0),
            ("vllm:request_success_total{finished_reason=stop}", 1.0),
        ]
    ),
    "set": OrderedDict(
        [
            ("vllm:num_requests_waiting", 0.0),
            ("vllm:num_requests_running", 1.0),
            ("vllm:kv_cache_usage_perc", 0.01),
            ("vllm:gpu_cache_usage_perc", 0.01),
        ]
    ),
}

# Default scenario (dcgm-exporter): gauges move, the energy counter grows by
# 123.5 W * 15 s = 1852.5 J = 1852500 mJ.  No reset variant by default.
DEFAULT_DCGM_LATER = {
    "observe": OrderedDict(),
    "inc": OrderedDict([("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1852500.0)]),
    "set": OrderedDict(
        [
            ("DCGM_FI_DEV_GPU_UTIL", 57.0),
            ("DCGM_FI_DEV_POWER_USAGE", 123.5),
            ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.5),
        ]
    ),
}

_SEL_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")


def parse_selector(sel: str) -> Tuple[str, Dict[str, str]]:
    m = _SEL_RE.match(sel.strip())
    if not m:
        raise SystemExit(f"bad selector: {sel!r}")
    labels = {}
    if m.group(2):
        for part in m.group(2).split(","):
            k, _, v = part.partition("=")
            labels[k.strip()] = v.strip().strip('"')
    return m.group(1), labels


def parse_observe(spec: str) -> Tuple[str, List[Tuple[float, int]]]:
    metric, _, rhs = spec.partition("=")
    obs = []
    for part in rhs.split(","):
        v, _, n = part.partition("x")
        obs.append((float(v), int(n or 1)))
    return metric.strip(), obs


def _matches(sel: Tuple[str, Dict[str, str]], name: str, labels: Dict[str, str]) -> bool:
    return sel[0] == name and all(labels.get(k) == v for k, v in sel[1].items())


def _types(text: str) -> Dict[str, str]:
    return reference.parse_lines(text)[1]


def _cumulative_kind(name: str, types: Dict[str, str]) -> Optional[str]:
    """'counter'/'histogram'/'summary' if this sample line is cumulative."""
    if types.get(name) == "counter" or (
        name.endswith("_total") and types.get(name[: -len("_total")]) == "counter"
    ):
        return "counter"
    for suf in ("_bucket", "_count", "_sum"):
        if name.endswith(suf) and types.get(name[: -len(suf)]) in ("histogram", "summary"):
            return types[name[: -len(suf)]]
    return None


def _is_created(name: str, types: Dict[str, str]) -> bool:
    if not name.endswith("_created"):
        return False
    base = name[: -len("_created")]
    return (
        types.get(base) in ("counter", "histogram", "summary")
        or types.get(base + "_total") == "counter"
        or types.get(name) == "gauge"
    )


def _fmt(v: float, original: str) -> str:
    """Format like the original token: ``5000`` stays integral, ``0.000000``
    keeps %f (dcgm-exporter styles), Python floats (vLLM) use repr."""
    v = float(v)
    if re.fullmatch(r"[+-]?\d+", original) and v.is_integer():
        return str(int(v))
    if re.fullmatch(r"[+-]?\d+\.\d{6}", original):
        return f"{v:f}"
    return repr(v)


def transform(text: str, changes: dict, reset: bool, interval: float) -> Tuple[str, dict]:
    """Apply ``changes`` (observe/inc/set) to ``text``; ``reset`` zeroes cumulatives first."""
    types = _types(text)
    observe = changes.get("observe", {})
    incs = [(parse_selector(s), a) for s, a in changes.get("inc", {}).items()]
    sets = [(parse_selector(s), v) for s, v in changes.get("set", {}).items()]
    applied: Dict[str, int] = {}
    out_lines = []
    for raw in text.splitlines(keepends=True):
        body = raw.rstrip("\r\n")
        stripped = body.strip()
        if not stripped or stripped.startswith("#"):
            out_lines.append(raw)
            continue
        lead = len(body) - len(body.lstrip())
        p = reference.parse_sample_line(body[lead:])
        v = p.value
        kind = _cumulative_kind(p.name, types)
        if reset and kind is not None:
            v = 0.0
        if reset and _is_created(p.name, types):
            v = v + interval
        for metric, obs in observe.items():
            hit = False
            for ov, n in obs:
                if p.name == metric + "_bucket" and "le" in p.labels:
                    if ov <= float(p.labels["le"]):
                        v += n
                    hit = True
                elif p.name == metric + "_count":
                    v += n
                    hit = True
                elif p.name == metric + "_sum":
                    v += n * ov
                    hit = True
            if hit:
                applied[metric] = applied.get(metric, 0) + 1
        for sel, amount in incs:
            if _matches(sel, p.name, p.labels):
                v += amount
                key = sel[0] + ("{" + ",".join(f"{k}={x}" for k, x in sel[1].items()) + "}" if sel[1] else "")
                applied[key] = applied.get(key, 0) + 1
        for sel, value in sets:
            if _matches(sel, p.name, p.labels):
                v = value
                applied[sel[0]] = applied.get(sel[0], 0) + 1
        if v != p.value or (reset and (kind is not None or _is_created(p.name, types))):
            s, e = p.value_span
            body = body[: lead + s] + _fmt(v, body[lead + s : lead + e]) + body[lead + e :]
            raw = body + raw[len(raw.rstrip("\r\n")) :]
        out_lines.append(raw)
    report = {
        "observe": {m: [[ov, n] for ov, n in obs] for m, obs in observe.items()},
        "inc": dict(changes.get("inc", {})),
        "set": dict(changes.get("set", {})),
        "lines_touched_by_spec": applied,
        "not_applied": sorted(
            [m for m in observe if m not in applied]
            + [s for s in changes.get("inc", {}) if _sel_key(s) not in applied]
            + [s for s in changes.get("set", {}) if parse_selector(s)[0] not in applied]
        ),
    }
    return "".join(out_lines), report


def _sel_key(s: str) -> str:
    name, labels = parse_selector(s)
    return name + ("{" + ",".join(f"{k}={x}" for k, x in labels.items()) + "}" if labels else "")


def make_series(
    fixture: Path,
    outdir: Path,
    interval: float = DEFAULT_INTERVAL,
    later_changes: Optional[dict] = None,
    reset_changes: Optional[dict] = None,
    with_reset: bool = True,
) -> dict:
    """Write the series files for one fixture; return the manifest."""
    kind = reference.fixture_kind(fixture)
    if later_changes is None:
        later_changes = DEFAULT_LATER if kind == "vllm" else DEFAULT_DCGM_LATER
    if reset_changes is None:
        reset_changes = DEFAULT_RESET
    with_reset = with_reset and kind == "vllm"
    text = fixture.read_text()
    stem = fixture.name[: -len(".txt")] if fixture.name.endswith(".txt") else fixture.name
    outdir.mkdir(parents=True, exist_ok=True)
    files = OrderedDict(earlier=f"{stem}.earlier.prom", later=f"{stem}.later.prom")
    (outdir / files["earlier"]).write_text(text)
    later_text, later_report = transform(text, later_changes, reset=False, interval=interval)
    (outdir / files["later"]).write_text(later_text)
    manifest = OrderedDict(
        fixture=reference._rel(fixture),
        kind=kind,
        interval_seconds=float(interval),
        files=files,
        later_changes=later_report,
    )
    expected = OrderedDict()
    if kind == "vllm":
        expected["later"] = reference.vllm_window(text, later_text, interval)
        expected["later_cumulative"] = reference.vllm_signals(later_text)
    else:
        expected["later_cumulative"] = reference.dcgm_gpus(later_text)
    if with_reset:
        files["reset"] = f"{stem}.reset.prom"
        reset_text, reset_report = transform(text, reset_changes, reset=True, interval=interval)
        (outdir / files["reset"]).write_text(reset_text)
        manifest["reset_changes"] = reset_report
        if kind == "vllm":
            expected["reset"] = reference.vllm_window(text, reset_text, interval)
            expected["reset_cumulative"] = reference.vllm_signals(reset_text)
    manifest["expected"] = expected
    (outdir / f"{stem}.series.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="FIXTURE... OUTDIR")
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    ap.add_argument("--no-defaults", action="store_true", help="start from an empty scenario")
    ap.add_argument("--no-reset", action="store_true", help="do not write the reset variant")
    for prefix in ("", "reset-"):
        ap.add_argument(f"--{prefix}observe", action="append", default=[])
        ap.add_argument(f"--{prefix}inc", action="append", default=[])
        ap.add_argument(f"--{prefix}set", action="append", default=[])
    a = ap.parse_args(argv)
    if len(a.paths) < 2:
        ap.error("need at least one FIXTURE and an OUTDIR")
    *fixtures, outdir = a.paths
    outdir = Path(outdir).resolve()
    if outdir == reference.REPO_ROOT or reference.REPO_ROOT in outdir.parents:
        ap.error(f"refusing to write into the repository ({outdir}); use a temp dir")
    paths: List[Path] = []
    for f in fixtures:
        if f == "all":
            found = reference.fixture_files()
            if not found:
                print(f"no fixtures under {reference.fixtures_dir()} (set INFERSCALE_SHARED)", file=sys.stderr)
                return 2
            paths += found
        else:
            paths.append(Path(f))

    def scenario(base: dict, obs: List[str], inc: List[str], st: List[str]) -> dict:
        sc = {k: OrderedDict() if a.no_defaults else OrderedDict(v) for k, v in base.items()}
        for o in obs:
            m, spec = parse_observe(o)
            sc["observe"][m] = spec
        for i in inc:
            s, _, amt = i.rpartition("=")
            sc["inc"][s] = float(amt)
        for x in st:
            s, _, val = x.rpartition("=")
            sc["set"][s] = float(val)
        return sc

    for p in paths:
        is_vllm = reference.fixture_kind(p) == "vllm"
        later = scenario(DEFAULT_LATER if is_vllm else DEFAULT_DCGM_LATER, a.observe, a.inc, a.set)
        reset = scenario(DEFAULT_RESET, a.reset_observe, a.reset_inc, a.reset_set)
        m = make_series(p, outdir, a.interval, later, reset, with_reset=not a.no_reset)
        na = m["later_changes"]["not_applied"]
        print(f"{p.name}: wrote {', '.join(m['files'].values())}, {p.stem}.series.json"
              + (f" (not in this fixture: {', '.join(na)})" if na else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
