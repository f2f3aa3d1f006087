"""What the performance scripts share: paths, process CPU/RSS sampling, the target fleet
(``vllm-sim fleet`` processes), machine load notes, percentiles and a small SVG plotter.

Owns nothing about any one measurement; ``envelope.py``, ``compare.py`` and ``latency.py``
are the measurements. Processes are started through the e2e harness' ``ProcessGroup``, so
none outlives a run (signals, atexit, pdeathsig).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.procs import Proc, ProcessGroup, log

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("INFERSCALE_SHARED", REPO.parent / "shared"))
# The newest real vLLM capture (0.16–0.18 layout, 52 KB, straight from vLLM): the body every
# fleet target serves.
CAPTURE = SHARED / "fixtures/vllm/vllm-0.16to0.18-v1-kops-k8s-ai-conformance-qwen2.5-0.5b.txt"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# One fleet process serves at most this many targets: each target holds two file descriptors
# (listener and the scraper's keep-alive connection) and the soft limit here is 20,000.
TARGETS_PER_FLEET_PROCESS = 5000


def require_capture() -> Path:
    if not CAPTURE.is_file():
        raise SystemExit(f"the real vLLM capture is needed and was not found: {CAPTURE} "
                         "(set INFERSCALE_SHARED to the shared/ folder)")
    return CAPTURE


def cargo_build_release(*packages: str) -> Path:
    """Builds release binaries of the given packages (niced); returns the target dir."""
    argv = ["nice", "-n", "10", "cargo", "build", "--release", "--quiet"]
    for p in packages:
        argv += ["-p", p]
    t0 = time.monotonic()
    subprocess.run(argv, cwd=REPO, check=True)
    log(f"release build of {', '.join(packages)} ready in {time.monotonic() - t0:.0f}s")
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"


# --- /proc sampling --------------------------------------------------------------------------

@dataclass
class ProcSample:
    at: float          # monotonic seconds
    cpu: float         # user + system CPU seconds so far
    rss: int           # resident bytes
    threads: int


def sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # Fields after the name: state is [0]; utime and stime are fields 14 and 15 overall.
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    threads = int(fields[17])
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return ProcSample(time.monotonic(), cpu, rss, threads)


def load_note() -> str:
    """`uptime`'s load averages and the busiest other processes, for the record."""
    with open("/proc/loadavg") as f:
        avg = " ".join(f.read().split()[:3])
    return f"load average {avg} on {os.cpu_count()} cores"


def busy_processes(exclude: set[int], top: int = 3) -> list[str]:
    """Other processes using CPU right now (over 1 s), to say what shared the machine."""
    def snapshot() -> dict[int, tuple[float, str]]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.find("(") + 1:stat.rfind(")")]
            f = stat.rsplit(")", 1)[1].split()
            out[int(entry)] = ((int(f[11]) + int(f[12])) / CLK_TCK, name)
        return out
    a = snapshot()
    time.sleep(1.0)
    b = snapshot()
    busy = sorted(((b[p][0] - a[p][0], b[p][1]) for p in b if p in a and p not in exclude),
                  reverse=True)[:top]
    return [f"{name} {cpu:.2f} cores" for cpu, name in busy if cpu >= 0.05]


# --- HTTP ------------------------------------------------------------------------------------

def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_post_json(url: str, body: dict, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def prom_values(text: str, name: str) -> dict[str, float]:
    """Samples of one family in a Prometheus text body: labels text -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            rest = line[len(name):]
            if rest[:1] not in ("{", " "):
                continue
            labels, _, value = rest.rpartition(" ")
            out[labels.strip()] = float(value)
    return out


# --- The fleet -------------------------------------------------------------------------------

@dataclass
class FleetProcs:
    procs: list[Proc]
    admins: list[str]      # admin base URLs
    urls: list[str]        # one /metrics URL per target

    def set_load(self, waiting: float, running: float = 0.0) -> float:
        """Every target reports this load from now on; returns the latest moment (Unix time)
        a process installed it."""
        ats = [http_post_json(f"{a}/admin/load", {"waiting": waiting, "running": running})["at"]
               for a in self.admins]
        return max(ats)

    def scrapes(self) -> int:
        return sum(json.loads(http_get(f"{a}/admin/stats"))["scrapes"] for a in self.admins)


def start_fleet(group: ProcessGroup, sim_bin: Path, addresses: list[str], port: int,
                admin_ports: list[int], workdir: Path) -> FleetProcs:
    """`vllm-sim fleet` processes serving the real capture on `addresses`:`port`, at most
    TARGETS_PER_FLEET_PROCESS each."""
    capture = require_capture()
    procs, admins = [], []
    chunks = [addresses[i:i + TARGETS_PER_FLEET_PROCESS]
              for i in range(0, len(addresses), TARGETS_PER_FLEET_PROCESS)]
    if len(admin_ports) < len(chunks):
        raise ValueError("one admin port per fleet process is needed")
    for k, chunk in enumerate(chunks):
        f = workdir / f"fleet-{k}.addresses"
        f.write_text("\n".join(chunk) + "\n")
        admin = f"127.0.0.1:{admin_ports[k]}"
        procs.append(group.start(f"fleet-{k}", [
            str(sim_bin), "fleet", "--capture", str(capture), "--addresses-file", str(f),
            "--port", str(port), "--admin", admin],
            env=dict(os.environ, RUST_LOG="warn,inferscale_sim=info", NO_COLOR="1")))
        admins.append(f"http://{admin}")
    deadline = time.monotonic() + 60 + len(addresses) / 500
    for p, a in zip(procs, admins):
        while True:
            try:
                http_get(f"{a}/admin/stats", timeout=1)
                break
            except OSError:
                if not p.alive():
                    raise RuntimeError(f"{p.name} died:\n{p.log_tail(20)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{p.name} did not come up:\n{p.log_tail(20)}")
                time.sleep(0.2)
    urls = [f"http://{a}:{port}/metrics" for a in addresses]
    return FleetProcs(procs, admins, urls)


def consecutive_addresses(first: str, count: int) -> list[str]:
    """Consecutive IPv4 addresses from `first`, skipping host bytes .0 and .255 (as
    `vllm-sim fleet --first-address` does)."""
    a, b, c, d = (int(x) for x in first.split("."))
    n = (a << 24) | (b << 16) | (c << 8) | d
    out = []
    while len(out) < count:
        if n & 0xFF not in (0, 255):
            out.append(f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        n += 1
    return out


# --- Statistics ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# --- SVG -------------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#17becf"]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str,
               ylabel: str, width: int = 640, height: int = 360, logx: bool = False,
               ymin: float | None = 0.0, hlines: list[tuple[str, float]] | None = None,
               markers: bool = True) -> str:
    """A self-contained SVG line chart (no plotting library needed)."""
    ml, mr, mt, mb = 64, 16, 36, 48
    pts = [p for _, s in series for p in s]
    xs = [math.log10(x) if logx else x for x, _ in pts] or [0, 1]
    ys = [y for _, y in pts] + [v for _, v in (hlines or [])]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    y0 = ymin if ymin is not None else min(ys or [0])
    y1 = max(ys or [1]) * 1.08 or 1
    yt = _nice_ticks(y0, y1)
    y1 = max(y1, yt[-1])
    pw, ph = width - ml - mr, height - mt - mb

    def X(x: float) -> float:
        v = math.log10(x) if logx else x
        return ml + (v - x0) / (x1 - x0) * pw

    def Y(y: float) -> float:
        return mt + ph - (y - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_esc(title)}</text>']
    for t in yt:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    if logx:
        xt = sorted({x for x, _ in pts})
    else:
        xt = _nice_ticks(x0, x1)
    for t in xt:
        if (math.log10(t) if logx else t) < x0 - 1e-9 or (math.log10(t) if logx else t) > x1 + 1e-9:
            continue
        out.append(f'<text x="{X(t):.1f}" y="{mt + ph + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#333"/>')
    out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="#333"/>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 10}" text-anchor="middle">{_esc(xlabel)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {mt + ph / 2})">{_esc(ylabel)}</text>')
    for label, v in hlines or []:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" '
                   'stroke="#999" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{ml + pw - 4}" y="{Y(v) - 4:.1f}" text-anchor="end" '
                   f'fill="#666">{_esc(label)}</text>')
    for i, (label, s) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if s:
            path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in s)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                       f'points="{path}"/>')
            if markers:
                for x, y in s:
                    out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{color}"/>')
        ly = mt + 8 + 14 * i
        out.append(f'<line x1="{ml + 10}" x2="{ml + 26}" y1="{ly}" y2="{ly}" stroke="{color}" '
                   'stroke-width="2"/>')
        out.append(f'<text x="{ml + 30}" y="{ly + 4}">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bar_chart(groups: list[str], series: list[tuple[str, list[float]]], title: str,
              ylabel: str, width: int = 760, height: int = 380, logy: bool = False) -> str:
    """Grouped bars (one group per path, one bar per series), as a self-contained SVG."""
    ml, mr, mt, mb = 64, 16, 36, 96
    vals = [v for _, s in series for v in s if v == v and v > 0]
    pw, ph = width - ml - mr, height - mt - mb
    if logy:
        lo = 10 ** math.floor(math.log10(min(vals or [0.1])))
        hi = 10 ** math.ceil(math.log10(max(vals or [1])))
        ticks = [10 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]

        def Y(v: float) -> float:
            v = max(v, lo)
            return mt + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
    else:
        hi = max(vals or [1]) * 1.1
        ticks = _nice_ticks(0, hi)
        hi = ticks[-1]

        def Y(v: float) -> float:
            return mt + ph - v / hi * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{_esc(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    gw = pw / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(series))
    for g, name in enumerate(groups):
        gx = ml + g * gw + gw * 0.1
        for i, (label, s) in enumerate(series):
            v = s[g]
            if not (v == v) or v <= 0:
                continue
            color = PALETTE[i % len(PALETTE)]
            out.append(f'<rect x="{gx + i * bw:.1f}" y="{Y(v):.1f}" width="{bw - 1:.1f}" '
                       f'height="{mt + ph - Y(v):.1f}" fill="{color}"><title>{_esc(label)} '
                       f'{v:.2f}</title></rect>')
        cx = gx + gw * 0.4
        out.append(f'<text x="{cx:.1f}" y="{mt + ph + 12}" text-anchor="end" '
                   f'transform="rotate(-30 {cx:.1f} {mt + ph + 12})">{_esc(name)}</text>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#333"/>')
    out.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {mt + ph / 2})">{_esc(ylabel)}</text>')
    for i, (label, _) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        lx = ml + 10 + 150 * i
        out.append(f'<rect x="{lx}" y="{mt - 4}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="{mt + 5}">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def parse_seconds(text: str) -> float:
    """`5s`, `500ms`, `1m` -> seconds."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * scale
    return float(text)
