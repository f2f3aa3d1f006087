"""The live demo: a real control plane, a simulated vLLM fleet, the adapter, and an HPA on
``vllm_num_requests_waiting`` — with a terminal view, refreshed every second, of what the HPA
sees and decides while a load ramp (up, plateau, down) runs for a bounded time.

    python3 -m tests.e2e.demo [--duration 240] [--peak-clients 36] [--plot out/demo.svg]

Everything runs on loopback and is torn down on exit, on Ctrl-C and on SIGTERM. Every value in
the view is read the way the HPA reads it: through the kube-apiserver's aggregation layer.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .cluster import Cluster, HarnessError
from .kube import KubeError, quantity
from .load import ClosedLoopLoad

NS, NAME, MODEL = "demo", "vllm-qwen", "qwen2.5-7b"
WAITING, RUNNING, TTFT = ("vllm_num_requests_waiting", "vllm_num_requests_running",
                          "vllm_time_to_first_token_p95")
CUSTOM = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/*"
# Each replica serves 2 requests at once (max_num_seqs) and the HPA aims at 4 waiting per
# replica, so C clients settle near C / (2 + 4) replicas.
MAX_NUM_SEQS = 2
TARGET = 4
BARS = " ▁▂▃▄▅▆▇█"


def clients_at(t: float, duration: float, peak: int, low: int) -> tuple[int, str]:
    """The load ramp: up over the first 15 %, plateau to 55 %, down to 70 %, then low."""
    f = t / duration
    if f < 0.15:
        return max(1, round(peak * f / 0.15)), "ramp up"
    if f < 0.55:
        return peak, "plateau"
    if f < 0.70:
        return max(low, round(peak - (peak - low) * (f - 0.55) / 0.15)), "ramp down"
    return low, "low"


def sparkline(values: list[float], width: int) -> str:
    values = values[-width:]
    top = max(values + [1e-9])
    return "".join(BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def read_pods(c: Cluster) -> dict[str, dict[str, float]]:
    pods: dict[str, dict[str, float]] = {}
    for metric in (WAITING, RUNNING, TTFT, "inferscale_gpu_utilization_ratio"):
        try:
            items = c.api.get(f"{CUSTOM}/{metric}")["items"]
        except (KubeError, OSError):
            continue
        for it in items:
            pods.setdefault(it["describedObject"]["name"], {})[metric] = quantity(it["value"])
    return pods


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"  # missing: not scraped, stale, or no observation — never shown as 0
    if unit == "ms":
        return f"{v:,.0f} ms"
    if unit == "%":
        return f"{v * 100:.0f}%"
    return f"{v:g}"


def render(c: Cluster, t: float, args, clients: int, phase: str, load: ClosedLoopLoad,
           history: list[dict]) -> str:
    lines = []
    width = shutil.get_terminal_size((110, 40)).columns
    lines.append(f"inferscale demo — HPA on {WAITING} (target {TARGET} per replica) through "
                 f"the adapter   t={t:5.0f}s / {args.duration:.0f}s")
    lines.append(f"load: {clients} clients ({phase})   completed {load.completed} "
                 f"({load.rate(10):.1f}/s)   errors {load.errors}")
    try:
        hpa = c.hpa(NS, NAME)
        dep = c.deployment(NS, NAME)
    except (KubeError, OSError) as e:
        return "\n".join(lines + [f"(API unavailable: {e})"])
    st = hpa.get("status", {})
    avg = None
    for m in st.get("currentMetrics") or []:
        if m.get("type") == "Pods":
            avg = quantity(m["pods"]["current"]["averageValue"])
    lines.append("")
    lines.append(f"HPA {NAME}: current {st.get('currentReplicas', '?')}  desired "
                 f"{st.get('desiredReplicas', '?')}  (min {hpa['spec']['minReplicas']}, max "
                 f"{hpa['spec']['maxReplicas']})   Deployment spec {dep['spec']['replicas']}, "
                 f"ready {dep.get('status', {}).get('readyReplicas', 0)}   "
                 f"HPA sees {WAITING} = {fmt(avg)} per pod")
    for cond in st.get("conditions", []):
        lines.append(f"  {cond['type']}={cond['status']} {cond.get('reason', '')}: "
                     f"{cond.get('message', '')}"[: width - 1])
    pods = read_pods(c)
    lines.append("")
    lines.append(f"{'POD (as the adapter serves it)':40} {'WAITING':>8} {'RUNNING':>8} "
                 f"{'TTFT p95':>10} {'GPU':>6}")
    live = sorted(p["metadata"]["name"] for p in c.pods(NS, f"app.kubernetes.io/name={NAME}")
                  if not p["metadata"].get("deletionTimestamp"))
    for name in live:
        v = pods.get(name, {})
        lines.append(f"{name:40} {fmt(v.get(WAITING)):>8} {fmt(v.get(RUNNING)):>8} "
                     f"{fmt(v.get(TTFT), 'ms'):>10} "
                     f"{fmt(v.get('inferscale_gpu_utilization_ratio'), '%'):>6}")
    total_waiting = sum(v.get(WAITING, 0) for v in pods.values())
    history.append({"t": t, "replicas": dep["spec"]["replicas"], "waiting": total_waiting,
                    "clients": clients, "desired": st.get("desiredReplicas") or 0})
    spark = max(10, width - 22)
    lines.append("")
    lines.append(f"replicas   {sparkline([h['replicas'] for h in history], spark)}")
    lines.append(f"waiting    {sparkline([h['waiting'] for h in history], spark)}")
    lines.append(f"clients    {sparkline([h['clients'] for h in history], spark)}")
    lines.append("")
    lines.append("EVENTS")
    try:
        events = c.events(NS)
    except (KubeError, OSError):
        events = []
    for e in [e for e in events if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"][-6:]:
        when = (e.get("lastTimestamp") or e.get("eventTime") or "")[11:19]
        lines.append(f"  {when} {e.get('reason', '')}: {e.get('message', '')}"[: width - 1])
    return "\n".join(lines)


def write_svg(history: list[dict], path: Path, duration: float) -> None:
    """Replicas, total queue and clients over time, as a small dependency-free SVG."""
    w, h, pad = 900, 360, 50
    top_r = max([h_["replicas"] for h_ in history] + [1])
    top_q = max([h_["waiting"] for h_ in history] + [h_["clients"] for h_ in history] + [1])

    def xy(t, v, top):
        return (pad + (w - 2 * pad) * t / max(duration, 1),
                h - pad - (h - 2 * pad) * v / top)

    def poly(key, top, color, step=False):
        pts = []
        for i, s in enumerate(history):
            x, y = xy(s["t"], s[key], top)
            if step and pts:
                pts.append(f"{x:.1f},{pts[-1].split(',')[1]}")
            pts.append(f"{x:.1f},{y:.1f}")
        return (f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                f'points="{" ".join(pts)}"/>')

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{pad}" y="20" font-size="14">inferscale demo: HPA on {WAITING} '
           f'(target {TARGET}/replica)</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           poly("waiting", top_q, "#d62728"), poly("clients", top_q, "#999999"),
           poly("replicas", top_r, "#1f77b4", step=True),
           f'<text x="{w - pad - 260}" y="40" fill="#1f77b4">replicas (max {top_r})</text>',
           f'<text x="{w - pad - 260}" y="56" fill="#d62728">requests waiting, all pods '
           f'(max {top_q:g})</text>',
           f'<text x="{w - pad - 260}" y="72" fill="#999999">load clients</text>',
           f'<text x="{w / 2}" y="{h - 15}">seconds (0–{duration:.0f})</text>',
           "</svg>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(svg))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=240, help="seconds of load (default 240)")
    ap.add_argument("--peak-clients", type=int, default=36)
    ap.add_argument("--low-clients", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=8)
    ap.add_argument("--plot", default="out/demo.svg", help="SVG written at the end ('' = none)")
    args = ap.parse_args(argv)
    tty = sys.stdout.isatty()
    history: list[dict] = []
    try:
        with Cluster() as c:
            c.create_deployment(NS, NAME, replicas=1, model=MODEL, max_num_seqs=MAX_NUM_SEQS)
            c.create_hpa(NS, NAME, NAME, WAITING, str(TARGET), min_replicas=1,
                         max_replicas=args.max_replicas, scale_down_window=20)
            addrs = lambda: [f"{ip}:8000" for ip in  # noqa: E731
                             c.ready_pod_ips(NS, f"app.kubernetes.io/name={NAME}")]
            with ClosedLoopLoad(addrs, MODEL, concurrency=0, name="demo",
                                max_duration=args.duration + 60) as load:
                t0 = time.monotonic()
                while (t := time.monotonic() - t0) < args.duration:
                    clients, phase = clients_at(t, args.duration, args.peak_clients,
                                                args.low_clients)
                    if clients != load.concurrency:
                        load.set_concurrency(clients)
                    c.check_components()
                    view = render(c, t, args, clients, phase, load, history)
                    if tty:
                        sys.stdout.write("\x1b[H\x1b[2J" + view + "\n")
                    else:
                        last = history[-1] if history else {}
                        print(f"t={t:5.0f}s clients={clients:3d} replicas="
                              f"{last.get('replicas')} desired={last.get('desired')} "
                              f"waiting={last.get('waiting', 0):g}")
                    sys.stdout.flush()
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - t)))
            if args.plot and history:
                write_svg(history, Path(args.plot), args.duration)
                print(f"plot of replicas and queue depth: {args.plot}")
    except KeyboardInterrupt:
        print("\ninterrupted; everything stopped")
        return 130
    except HarnessError as e:
        print(f"\nthe stack failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
