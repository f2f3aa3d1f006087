"""API latency on the real path: the adapter in serve mode over TLS, with delegated
authentication (front-proxy client certificate + X-Remote-User/X-Remote-Group) and delegated
authorization (SubjectAccessReview against kube-apiserver) in every request's path, called by a
load client in a process of its own as the kube-aggregator calls it.

One real control plane (the e2e harness: etcd, kube-apiserver with the aggregation layer,
kwok), the adapter as the harness runs it (serving certificate, requestheader CA read from
kube-system/extension-apiserver-authentication, SubjectAccessReviews to kube-apiserver) with
the default scrape settings (5 s interval, 3 s timeout, 60 s window), and a Deployment of
``--pods`` kwok pods (default 1,000) whose ``/metrics`` (the real vLLM 0.18 capture) ``vllm-sim
fleet`` serves on each pod's own address. Once the adapter serves every pod, ``api_load``
(adapter/examples/api_load.rs, release build) lists ``pods/*/vllm_num_requests_waiting`` for
the whole namespace:

  direct-h2     the adapter's TLS port, the aggregator's identity and transport: front-proxy
                client certificate, the HPA controller's user and groups in X-Remote-* headers,
                one HTTP/2 connection (kube-aggregator v0.35 builds its proxy transport with
                client-go's transport.New -> utilnet.SetTransportDefaults, which enables
                HTTP/2 unless DISABLE_HTTP2 is set), ``--clients`` concurrent clients
  direct-h1     the same over HTTP/1.1, one keep-alive connection per client
  direct-cold   every request a new user (``--unique-users``): no authorization decision is
                cached, each request waits for a SubjectAccessReview (the users' group is
                bound to the adapter's metrics-reader ClusterRole, so RBAC evaluates a binding
                as it does for the HPA); ``--cold-clients`` clients
  aggregator    through kube-apiserver (client certificate of the cluster admin, the
                aggregator's proxy, the adapter), ``--aggregator-clients`` clients, for
                reference: kube-apiserver's own authn/authz and proxying are in it

Then, with ``--targets`` > ``--pods`` (default 10,000), a second Deployment in namespace
``bulk`` brings the scraped targets to that number and direct-h2 and aggregator run again
while the adapter scrapes them all. Each row: requests, errors, p50/p90/p99/max, the first
request (TLS handshake and an empty authorization cache), the adapter's CPU over the run and
the machine's load average. Results go to docs/perf/api-latency.json.

Run it beside the e2e suite with its own loopback block (tests/e2e/cluster.py ADDRESS_BLOCK):

    PYTEST_XDIST_WORKER=gw6 python3 -m tests.perf.api_latency            # make api-latency
    PYTEST_XDIST_WORKER=gw6 python3 -m tests.perf.api_latency --pods 100 --targets 0 --duration 5

Bounded: every wait has a deadline, every load run a duration; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.cluster import ADDRESS_BLOCK, Cluster
from tests.e2e.pki import ADAPTER_SERVICE_DNS
from tests.e2e.procs import log
from tests.perf import common
from tests.perf.compare import PODS_PER_NODE, create_kwok_fleet

OUT = common.REPO / "docs/perf/api-latency.json"
NS, BULK_NS = "fleet", "bulk"
METRIC = "vllm_num_requests_waiting"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kube-system",
              "system:authenticated"]
# The cold run's users are members of this group, bound to the adapter's reader role.
COLD_GROUP = "inferscale-latency-bench"
GOAL_P99_MS = 5.0


def list_path(namespace: str) -> str:
    return f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{METRIC}"


def build(profile: str) -> Path:
    """``debug``: the debug binaries as they are built (``cargo build -p inferscale-adapter
    -p inferscale-sim --example api_load``), for a quick look; figures are from release.
    ``release``: release builds of the adapter, vllm-sim and the load client in one cargo invocation
    (an example unifies the package's dev-dependency features into the build, e.g. tokio's
    test-util, which add API and no work on this path; one invocation builds the dependency
    graph once instead of twice). The harness runs these binaries
    (INFERSCALE_E2E_ADAPTER_BIN/SIM_BIN); its own build stays the debug one."""
    if profile == "release":
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "--quiet",
                        "-p", "inferscale-adapter", "-p", "inferscale-sim", "--bins",
                        "--example", "api_load"], cwd=common.REPO, check=True)
    release = Path(os.environ.get("CARGO_TARGET_DIR", common.REPO / "target")) / profile
    os.environ["INFERSCALE_E2E_ADAPTER_BIN"] = str(release / "adapter")
    os.environ["INFERSCALE_E2E_SIM_BIN"] = str(release / "vllm-sim")
    return release / "examples/api_load"


def adapter_engine_targets_up(c: Cluster) -> int:
    """Engine targets the adapter scraped successfully last round (its own /metrics, read
    through the aggregator's identity as an admin)."""
    direct = c.adapter_direct(cert=c.pki.front_proxy_client)
    status, body = direct.raw("GET", "/metrics", headers={
        "X-Remote-User": "admin", "X-Remote-Group": "system:masters"})
    if status != 200:
        return -1
    for labels, v in common.prom_values(body.decode(), "inferscale_adapter_targets").items():
        if 'kind="engine"' in labels and 'state="up"' in labels:
            return int(v)
    return 0


def run_load(c: Cluster, load_bin: Path, name: str, clients: int, duration: float,
             via: str, namespace: str = NS, http1: bool = False,
             unique_users: bool = False) -> dict:
    p = c.pki
    if via == "adapter":
        url = f"https://127.0.0.1:{c.ports['adapter']}{list_path(namespace)}"
        tls = ["--ca", p.adapter_ca.cert, "--cert", p.front_proxy_client.cert,
               "--key", p.front_proxy_client.key, "--server-name", ADAPTER_SERVICE_DNS]
        if unique_users:
            headers = ["--header", f"X-Remote-User: {HPA_USER}",
                       "--header", f"X-Remote-Group: {COLD_GROUP}",
                       "--unique-users", f"latency-bench-{int(time.time())}"]
        else:
            headers = ["--header", f"X-Remote-User: {HPA_USER}"]
            for g in HPA_GROUPS:
                headers += ["--header", f"X-Remote-Group: {g}"]
    else:
        url = f"https://127.0.0.1:{c.ports['apiserver']}{list_path(namespace)}"
        tls = ["--ca", p.ca.cert, "--cert", p.admin.cert, "--key", p.admin.key,
               "--server-name", "localhost"]
        headers = []
    argv = [str(load_bin), "--url", url, *tls, *headers, "--clients", str(clients),
            "--duration", f"{int(duration * 1000)}ms", "--json"]
    if http1:
        argv.append("--http1")
    load_before = common.load_note()
    a0 = common.sample(c.adapter.pid)
    # The load client's own CPU (its TLS, HTTP/2 and gzip decoding of every answer), so a
    # run says how much of the two cores went to the adapter and how much to the client.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    a1 = common.sample(c.adapter.pid)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: api_load failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update({
        "name": name, "via": via, "namespace": namespace,
        "adapter_cpu_cores": round((a1.cpu - a0.cpu) / (a1.at - a0.at), 3),
        "client_cpu_cores": round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
                                  / (a1.at - a0.at), 3),
        "load_before": load_before, "load_after": common.load_note(),
    })
    log(f"{name}: {out['requests']} requests, {out['errors']} errors, p50 {out['p50_ms']:.2f} "
        f"p99 {out['p99_ms']:.2f} max {out['max_ms']:.2f} ms, first {out['first_ms']:.1f} ms, "
        f"adapter {out['adapter_cpu_cores']} cores, load client {out['client_cpu_cores']} cores, "
        f"{out['load_after']}")
    return out


def bind_cold_group(c: Cluster) -> None:
    c.api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": COLD_GROUP},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "inferscale-metrics-reader"},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                               "name": COLD_GROUP}]})


def wait_listed(c: Cluster, namespace: str, n: int) -> None:
    t0 = time.monotonic()

    def listed() -> bool:
        items = c.api.get(list_path(namespace))["items"]
        return len(items) >= n
    c.wait_for(listed, f"the adapter to list {n} pods in {namespace}", timeout=120 + n / 20,
               interval=2)
    log(f"{n} pods listed in {namespace} after {time.monotonic() - t0:.0f}s")


def client_cores(row: dict) -> str:
    """Runs recorded before the client's CPU was measured have none."""
    v = row.get("client_cpu_cores")
    return "—" if v is None else f"{v:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| phase | run | clients | protocol | requests | errors | p50 ms | p90 ms | p99 ms "
             "| max ms | first request ms | adapter cores | load client cores "
             "| load average before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['name']} | {r['clients']} | {r['protocol']} | "
            f"{r['requests']:,} | {r['errors']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['first_ms']:.1f} | "
            f"{r['adapter_cpu_cores']:.2f} | {client_cores(r)} | {r['load_before'].split()[2]} → "
            f"{r['load_after'].split()[2]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=1000, help="pods in the listed namespace")
    ap.add_argument("--targets", type=int, default=10000,
                    help="scraped targets in the second phase (0: no second phase)")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--cold-clients", type=int, default=10)
    ap.add_argument("--aggregator-clients", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--profile", choices=["release", "debug"], default="release",
                    help="debug: use the debug binaries already built, no release build")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--no-save", action="store_true", help="do not write api-latency.json")
    args = ap.parse_args()
    if "PYTEST_XDIST_WORKER" not in os.environ:
        log("PYTEST_XDIST_WORKER is not set: pods take loopback block 0, as the e2e suite's "
            "first worker does (set PYTEST_XDIST_WORKER=gwN to run beside it)")
    common.require_capture()
    load_bin = build(args.profile)
    workdir = Path(tempfile.mkdtemp(prefix="inferscale-api-latency-"))
    c = Cluster(workdir=workdir / "cluster",
                adapter_settings={"scrape-interval": "5s", "scrape-timeout": "3s",
                                  "window": "60s"},
                external_metrics=False, simulators=False, nodes=1)
    rows: list[dict] = []
    ok = False
    try:
        c.start()
        bind_cold_group(c)
        create_kwok_fleet(c, args.pods, workdir, NS)
        wait_listed(c, NS, args.pods)
        phase = f"{args.pods:,} pods scraped"
        d = args.duration
        for row in (
            run_load(c, load_bin, "direct-h2", args.clients, d, "adapter"),
            run_load(c, load_bin, "direct-h1", args.clients, d, "adapter", http1=True),
            run_load(c, load_bin, "direct-cold", args.cold_clients, d, "adapter",
                     unique_users=True),
            run_load(c, load_bin, "aggregator", args.aggregator_clients, d, "apiserver"),
        ):
            rows.append({**row, "phase": phase})
        if args.targets > args.pods:
            print(table(rows), flush=True)  # phase 1 stands even if phase 2 cannot finish
            bulk = args.targets - args.pods
            create_kwok_fleet(c, bulk, workdir, BULK_NS,
                              first_node=-(-args.pods // PODS_PER_NODE) + 1)
            t0 = time.monotonic()
            c.wait_for(lambda: adapter_engine_targets_up(c) >= args.targets,
                       f"the adapter to scrape {args.targets} targets",
                       timeout=180 + args.targets / 50, interval=2)
            log(f"{args.targets} targets up after {time.monotonic() - t0:.0f}s")
            phase = f"{args.pods:,} pods listed, {args.targets:,} scraped"
            for row in (
                run_load(c, load_bin, "direct-h2", args.clients, d, "adapter"),
                run_load(c, load_bin, "direct-cold", args.cold_clients, d, "adapter",
                         unique_users=True),
                run_load(c, load_bin, "aggregator", args.aggregator_clients, d, "apiserver"),
            ):
                rows.append({**row, "phase": phase})
        ok = True
    finally:
        if not ok:
            c.failed = True
            log(c.log_tails(30))
        c.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    print(table(rows))
    met = [r["p99_ms"] <= GOAL_P99_MS for r in rows if r["name"] == "direct-h2"]
    print(f"goal p99 <= {GOAL_P99_MS} ms (direct-h2, {args.clients} clients): "
          f"{'met' if all(met) else 'NOT met'} in {sum(met)} of {len(met)} phases")
    if not args.no_save:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({
            "pods": args.pods, "targets": args.targets, "duration_s": args.duration,
            "profile": args.profile,
            "address_block": ADDRESS_BLOCK, "cores": os.cpu_count(), "rows": rows,
            "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=common.REPO,
                                  capture_output=True, text=True).stdout.strip(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
