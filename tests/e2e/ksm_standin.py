"""A stand-in for kube-state-metrics' HorizontalPodAutoscaler family, and only that.

kube-state-metrics (k8s.io/kube-state-metrics/v2) is refused by the Go module proxy reachable
here (403 "not available"), so the real one cannot be built. The dashboards and alerts read
its HPA metrics; this exporter renders them from the real HPA objects of the real
control plane, with the names and labels kube-state-metrics documents
(its horizontalpodautoscaler-metrics.md):

    kube_horizontalpodautoscaler_info{namespace, horizontalpodautoscaler,
        scaletargetref_api_version, scaletargetref_kind, scaletargetref_name} 1
    kube_horizontalpodautoscaler_spec_min_replicas / _spec_max_replicas
    kube_horizontalpodautoscaler_status_current_replicas / _status_desired_replicas
    kube_horizontalpodautoscaler_status_condition{condition, status="true|false|unknown"}
    kube_horizontalpodautoscaler_spec_target_metric{metric_name, metric_target_type}

It is a mock of a part that cannot be had, and is named as one wherever it is used. What it
proves is that our queries join and select these series correctly against real HPA values, not
that kube-state-metrics behaves as documented.
"""

from __future__ import annotations

import http.server
import threading
from typing import Callable

from .cluster import free_port
from .kube import quantity


def _labels(pairs: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs.items()) + "}"


def render(hpas: list[dict]) -> str:
    families: dict[str, list[str]] = {}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        families.setdefault(name, []).append(f"{name}{_labels(labels)} {value:g}")

    for h in hpas:
        meta, spec, status = h["metadata"], h["spec"], h.get("status", {})
        base = {"namespace": meta["namespace"], "horizontalpodautoscaler": meta["name"]}
        ref = spec["scaleTargetRef"]
        add("kube_horizontalpodautoscaler_info", {
            **base, "scaletargetref_api_version": ref.get("apiVersion", ""),
            "scaletargetref_kind": ref["kind"], "scaletargetref_name": ref["name"]}, 1)
        add("kube_horizontalpodautoscaler_spec_min_replicas", base, spec.get("minReplicas", 1))
        add("kube_horizontalpodautoscaler_spec_max_replicas", base, spec["maxReplicas"])
        add("kube_horizontalpodautoscaler_status_current_replicas", base,
            status.get("currentReplicas", 0))
        add("kube_horizontalpodautoscaler_status_desired_replicas", base,
            status.get("desiredReplicas", 0))
        for m in spec.get("metrics", []):
            source = m.get(m["type"][0].lower() + m["type"][1:], {})
            name = source.get("metric", {}).get("name") or source.get("name", "")
            target = source.get("target", {})
            kind = {"Value": "value", "AverageValue": "average",
                    "Utilization": "utilization"}[target.get("type", "Value")]
            raw = target.get("averageUtilization") if kind == "utilization" else \
                target.get("averageValue" if kind == "average" else "value")
            add("kube_horizontalpodautoscaler_spec_target_metric",
                {**base, "metric_name": name, "metric_target_type": kind}, quantity(raw))
        for cond in status.get("conditions", []):
            for value in ("true", "false", "unknown"):
                add("kube_horizontalpodautoscaler_status_condition",
                    {**base, "condition": cond["type"], "status": value},
                    1 if cond["status"].lower() == value else 0)
    out = []
    for name, lines in families.items():
        out += [f"# HELP {name} kube-state-metrics stand-in (tests/e2e/ksm_standin.py).",
                f"# TYPE {name} gauge", *lines]
    return "\n".join(out) + "\n"


class KsmStandIn:
    """Serves render(list_hpas()) on 127.0.0.1:<port>/metrics until stop()."""

    def __init__(self, list_hpas: Callable[[], list[dict]]):
        self.port = free_port()
        list_ = list_hpas

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                body = render(list_()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="ksm-standin",
                                       daemon=True)

    def start(self) -> "KsmStandIn":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
