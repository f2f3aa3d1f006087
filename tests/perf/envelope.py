"""The adapter's scale envelope: CPU (cores) and resident memory while it scrapes N targets.

For each size, ``vllm-sim fleet`` processes serve the real vLLM 0.18 capture (52 KB, gzipped
as vLLM serves it, counters and histograms moving every second) on N loopback addresses; the
adapter runs in standalone mode with those N targets at a 5 s interval (the default) and the
default 60 s window. After a warm-up (every target up, then one window so the per-pod history
is full) the adapter's CPU and RSS are sampled from /proc every 5 s for the duration. The
scrapes the adapter completed are checked against the N/interval it should have done, so a
scraper that falls behind cannot look cheap.

    python3 -m tests.perf.envelope --targets 100,1000,5000,10000 --duration 600   # the README figure
    python3 -m tests.perf.envelope --targets 1000 --duration 60                   # a quick check

Results are appended to docs/perf/envelope.json (one record per size and run, with the
machine's load before and after); ``--report`` redraws the docs/perf/envelope-*.svg charts and
prints the table from the newest commit's full-length runs there (its shorter runs if it has
none). Bounded: every run stops by itself; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.e2e.procs import ProcessGroup, log
from tests.perf import common

OUT_DIR = common.REPO / "docs/perf"
RESULTS = OUT_DIR / "envelope.json"
# Far above the e2e workers' loopback blocks (tests/e2e/cluster.py: 127.(1+2N) and 127.(2+2N)),
# so an envelope run cannot collide with e2e pods on port 8000.
FIRST_ADDRESS = "127.64.0.1"
PORT = 8000
FULL_RUN_SECONDS = 600
GOAL_CORES = 1.0
GOAL_RSS_MIB = 512


def targets_file(path: Path, urls: list[str]) -> None:
    """Static targets: one Deployment's pods, as a real fleet would be."""
    entries = [{
        "namespace": "fleet", "name": f"vllm-{i:05d}", "url": url,
        "labels": {"app": "vllm", "inferscale.dev/scrape": "true"},
        "owners": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "vllm-7d9f"},
                   {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"}],
    } for i, url in enumerate(urls)]
    path.write_text(json.dumps(entries))


def adapter_metrics(port: int) -> str:
    return common.http_get(f"http://127.0.0.1:{port}/metrics").decode()


def engine_scrapes(text: str) -> dict[str, float]:
    """Engine scrapes by result."""
    out = {}
    for labels, v in common.prom_values(text, "inferscale_adapter_scrapes_total").items():
        if 'kind="engine"' in labels:
            result = labels.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0) + v
    return out


def targets_up(text: str) -> int:
    for labels, v in common.prom_values(text, "inferscale_adapter_targets").items():
        if 'kind="engine"' in labels and 'state="up"' in labels:
            return int(v)
    return 0


def run_size(n: int, duration: float, warmup: float, interval: str, bins: Path,
             workdir: Path, perf_seconds: float, extra_args: list[str],
             adapter_bin: Path | None = None, lane: int = 0) -> dict:
    group = ProcessGroup(uuid.uuid4().hex[:12], workdir)
    try:
        # A second lane (another run at the same time) takes its own addresses and ports.
        first = FIRST_ADDRESS.replace("127.64.", f"127.{64 + lane}.", 1)
        addresses = common.consecutive_addresses(first, n)
        fleet_count = -(-n // common.TARGETS_PER_FLEET_PROCESS)
        admin_ports = [7900 + 20 * lane + k for k in range(fleet_count)]
        fleet = common.start_fleet(group, bins / "vllm-sim", addresses, PORT, admin_ports,
                                   workdir)
        tf = workdir / f"targets-{n}.json"
        targets_file(tf, fleet.urls)
        api_port = 7890 + lane
        adapter = group.start("adapter", [
            str(adapter_bin or bins / "adapter"), "serve", "--standalone", f"--targets-file={tf}",
            f"--insecure-listen=127.0.0.1:{api_port}", f"--scrape-interval={interval}",
            *extra_args], env=dict(os.environ, RUST_LOG="warn", NO_COLOR="1"))
        t0 = time.monotonic()
        while True:
            try:
                up = targets_up(adapter_metrics(api_port))
            except OSError:
                up = -1
            if up >= n:
                break
            if not adapter.alive():
                raise RuntimeError(f"adapter died:\n{adapter.log_tail(30)}")
            if time.monotonic() - t0 > 120 + n / 100:
                raise RuntimeError(f"only {up} of {n} targets up after "
                                   f"{time.monotonic() - t0:.0f}s:\n{adapter.log_tail(30)}")
            time.sleep(1)
        log(f"{n} targets up after {time.monotonic() - t0:.0f}s; warming up {warmup:.0f}s")
        time.sleep(warmup)

        load_before = common.load_note()
        busy_before = common.busy_processes({adapter.pid, *(p.pid for p in fleet.procs)})
        m0 = engine_scrapes(adapter_metrics(api_port))
        f0 = fleet.scrapes()
        a0 = common.sample(adapter.pid)
        fl0 = [common.sample(p.pid) for p in fleet.procs]
        samples = [a0]
        perf = None
        if perf_seconds > 0:
            perf_out = workdir / f"perf-{n}.data"
            perf = subprocess.Popen(
                ["perf", "record", "-F", "499", "-g", "-o", str(perf_out), "-p",
                 str(adapter.pid), "--", "sleep", str(perf_seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = a0.at + duration
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            if not adapter.alive():
                raise RuntimeError(f"adapter died:\n{adapter.log_tail(30)}")
            samples.append(common.sample(adapter.pid))
        a1 = samples[-1]
        fl1 = [common.sample(p.pid) for p in fleet.procs]
        m1 = engine_scrapes(adapter_metrics(api_port))
        f1 = fleet.scrapes()
        load_after = common.load_note()
        if perf is not None:
            perf.wait(timeout=perf_seconds + 60)
            log(f"perf profile: {workdir / f'perf-{n}.data'}")

        wall = a1.at - a0.at
        cores = [(b.cpu - a.cpu) / (b.at - a.at) for a, b in zip(samples, samples[1:])]
        rss_mib = [s.rss / 2**20 for s in samples]
        minute = max(1, int(60 / 5))
        first, last = rss_mib[:minute], rss_mib[-minute:]
        succeeded = m1.get("success", 0) - m0.get("success", 0)
        failed = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if k != "success"}
        # Each round waits the interval plus a random jitter of up to 10 % (5 % on average).
        expected = n * wall / (common.parse_seconds(interval) * 1.05)
        record = {
            "targets": n,
            "interval": interval,
            "duration_s": round(wall, 1),
            "cpu_cores": round((a1.cpu - a0.cpu) / wall, 4),
            "cpu_cores_p95_5s": round(common.percentile(cores, 0.95), 4),
            "cpu_cores_max_5s": round(max(cores), 4),
            "rss_mib_first_minute": round(sum(first) / len(first), 1),
            "rss_mib_last_minute": round(sum(last) / len(last), 1),
            "rss_mib_max": round(max(rss_mib), 1),
            "rss_kib_per_target": round(a1.rss / 1024 / n, 1),
            "cpu_ms_per_scrape": round((a1.cpu - a0.cpu) * 1000 / max(1, succeeded), 4),
            "threads": a1.threads,
            "scrapes_succeeded": int(succeeded),
            "scrapes_expected": int(expected),
            "scrapes_failed": {k: int(v) for k, v in failed.items() if v},
            "fleet_scrapes_served": f1 - f0,
            "fleet_cpu_cores": round(sum(b.cpu - a.cpu for a, b in zip(fl0, fl1)) / wall, 4),
            "series": [[round(s.at - a0.at, 1), round(c, 4), round(r, 1)]
                       for s, c, r in zip(samples[1:], cores, rss_mib[1:])],
            "load_before": load_before,
            "load_after": load_after,
            "busy_before": busy_before,
            "adapter_args": extra_args,
            "git": git_describe(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        log(f"{n} targets: {record['cpu_cores']:.3f} cores (p95 of 5 s: "
            f"{record['cpu_cores_p95_5s']:.3f}), RSS {record['rss_mib_first_minute']:.0f} -> "
            f"{record['rss_mib_last_minute']:.0f} MiB (max {record['rss_mib_max']:.0f}), "
            f"{succeeded:.0f}/{expected:.0f} scrapes, failed {record['scrapes_failed']}, "
            f"{load_before} -> {load_after}")
        return record
    finally:
        group.stop_all()


def git_describe() -> str:
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=common.REPO,
                       capture_output=True, text=True)
    return r.stdout.strip()


def load_results() -> list[dict]:
    if RESULTS.is_file():
        return json.loads(RESULTS.read_text())
    return []


def report(results: list[dict]) -> str:
    """The table and the SVGs from one code state: the newest commit's full-length runs (if
    no run is full-length, the newest commit's runs of any length)."""
    # Runs of an older commit measured for comparison (the README's before/after table) are
    # not the figure.
    results = [r for r in results if "baseline_of" not in r]
    full = [r for r in results if r["duration_s"] >= FULL_RUN_SECONDS * 0.95
            and r["interval"] == "5s"]
    runs = full or results
    if runs:
        # The figure is from one code state: the newest commit with (full, if any) runs. A
        # run's own appending to envelope.json makes the next size's tree "-dirty".
        def commit(r: dict) -> str:
            return r["git"].removesuffix("-dirty")
        newest = commit(max(runs, key=lambda r: r["when"]))
        runs = [r for r in runs if commit(r) == newest]
    by_size: dict[int, list[dict]] = {}
    for r in runs:
        by_size.setdefault(r["targets"], []).append(r)
    lines = ["| targets | CPU, cores (mean over the run) | CPU, p95 of 5 s samples | RSS first → last minute, MiB | RSS max, MiB | scrapes done / due | load average before → after |",
             "|---|---|---|---|---|---|---|"]

    def rng(vals: list[float], fmt: str) -> str:
        lo, hi = min(vals), max(vals)
        return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"
    for n in sorted(by_size):
        rs = by_size[n]
        lines.append(
            f"| {n:,} | {rng([r['cpu_cores'] for r in rs], '{:.3f}')} | "
            f"{rng([r['cpu_cores_p95_5s'] for r in rs], '{:.3f}')} | "
            f"{rng([r['rss_mib_first_minute'] for r in rs], '{:.0f}')} → "
            f"{rng([r['rss_mib_last_minute'] for r in rs], '{:.0f}')} | "
            f"{rng([r['rss_mib_max'] for r in rs], '{:.0f}')} | "
            f"{sum(r['scrapes_succeeded'] for r in rs):,} / {sum(r['scrapes_expected'] for r in rs):,} | "
            f"{'; '.join(r['load_before'].split()[2] + ' → ' + r['load_after'].split()[2] for r in rs)} |")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cpu = [(n, sum(r["cpu_cores"] for r in rs) / len(rs)) for n, rs in sorted(by_size.items())]
    rss = [(n, max(r["rss_mib_max"] for r in rs)) for n, rs in sorted(by_size.items())]
    svg_cpu = common.line_chart([("adapter CPU (mean of runs)", cpu)],
                                "Adapter CPU vs targets (5 s interval, 52 KB vLLM bodies)",
                                "targets", "cores", logx=True,
                                hlines=[("goal at 10,000: 1 core", GOAL_CORES)])
    svg_rss = common.line_chart([("adapter RSS (max over runs)", rss)],
                                "Adapter resident memory vs targets", "targets", "MiB",
                                logx=True, hlines=[("goal at 10,000: 512 MiB", GOAL_RSS_MIB)])
    over_time = []
    for n in sorted(by_size):
        r = by_size[n][-1]
        over_time.append((f"{n:,} targets", [(t, m) for t, _, m in r["series"]]))
    svg_time = common.line_chart(over_time, "Adapter RSS over the run", "seconds", "MiB",
                                 markers=False)
    (OUT_DIR / "envelope-cpu.svg").write_text(svg_cpu)
    (OUT_DIR / "envelope-rss.svg").write_text(svg_rss)
    (OUT_DIR / "envelope-rss-over-time.svg").write_text(svg_time)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="100,1000,5000,10000",
                    help="comma-separated fleet sizes, run one after the other")
    ap.add_argument("--duration", type=float, default=FULL_RUN_SECONDS,
                    help="measured seconds per size (the README figure uses 600)")
    ap.add_argument("--warmup", type=float, default=70.0,
                    help="seconds after every target is up before measuring (one 60 s window)")
    ap.add_argument("--interval", default="5s", help="the adapter's --scrape-interval")
    ap.add_argument("--perf", type=float, default=0.0,
                    help="also record a perf profile of the adapter for this many seconds")
    ap.add_argument("--no-save", action="store_true", help="do not append to envelope.json")
    ap.add_argument("--adapter-bin", type=Path,
                    help="run this adapter binary (e.g. one built from an older commit)")
    ap.add_argument("--baseline-of", metavar="COMMIT",
                    help="with --adapter-bin: the commit that binary was built from; the "
                         "records are kept as that baseline, not as the figure")
    ap.add_argument("--lane", type=int, default=0, choices=range(10),
                    help="run beside another envelope run: lane N uses 127.(64+N).x.x "
                         "addresses and ports 7890+N, 7900+20N..")
    ap.add_argument("--report", action="store_true",
                    help="only print the table and redraw the SVGs from envelope.json")
    ap.add_argument("adapter_args", nargs="*", help="extra `adapter serve` flags (after --)")
    args = ap.parse_args()
    if args.report:
        print(report(load_results()))
        return
    bins = common.cargo_build_release("inferscale-adapter", "inferscale-sim")
    common.require_capture()
    for n in (int(x) for x in args.targets.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"inferscale-envelope-{n}-") as d:
            record = run_size(n, args.duration, args.warmup, args.interval, bins, Path(d),
                              args.perf, args.adapter_args, args.adapter_bin, args.lane)
            if args.baseline_of:
                record["baseline_of"] = args.baseline_of
                record["git"] = args.baseline_of
            record["lane"] = args.lane
            if args.perf:
                keep = Path(tempfile.gettempdir()) / f"inferscale-envelope-perf-{n}.data"
                src = Path(d) / f"perf-{n}.data"
                if src.exists():
                    src.replace(keep)
                    log(f"perf profile kept at {keep}")
        if not args.no_save:
            results = load_results()
            results.append(record)
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(report(load_results()))


if __name__ == "__main__":
    main()
