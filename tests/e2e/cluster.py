"""A real, local Kubernetes control plane with a simulated vLLM fleet and the adapter on the host.

Owns bring-up and teardown of: etcd; kube-apiserver with the aggregation layer (front-proxy CA
and client certificate, request-header flags), loopback only; kube-controller-manager running
the HPA, Deployment, ReplicaSet and garbage-collector controllers (2 s HPA sync); kube-scheduler
(places pods on fake nodes by their nvidia.com/gpu requests); kwok, which manages fake Nodes and
Pods and gives pods IPs in ``POD_CIDR`` (127.1.0.0/16 for one run); the *fleet* — a thread that runs, for every pod whose
container is ``vllm-sim``, that process bound to the pod's IP, started when kwok marks the pod
Running and stopped when the pod goes away (engine pods: ``vllm-sim serve``; one ``vllm-sim
dcgm`` pod per fake node, fed the node's GPU assignments); and the adapter, on the host, reached
by the aggregator through a Service whose EndpointSlice the harness keeps (one endpoint per
adapter process) and APIService objects with a caBundle.

Teardown (``Cluster.stop``, also run from atexit and signal handlers) leaves no process behind.

Usable as a library (the pytest fixture in ``conftest.py``, the demo in ``demo.py``)::

    with Cluster() as c:
        c.create_deployment("demo", "vllm", replicas=1, max_num_seqs=2)
        print(c.get_raw("/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/*/"
                        "vllm_num_requests_waiting"))
"""

from __future__ import annotations

import base64
import calendar
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .kube import Kube, KubeError, ssl_context
from .pki import ADAPTER_SERVICE_DNS, Pki, make_pki, write_kubeconfig
from .procs import Proc, ProcessGroup, log, tail

REPO = Path(__file__).resolve().parents[2]

# --- Tunables (each sized for a 2-core CI machine and a suite under ten minutes) -------------
# HPA sync period: the controller's default is 15 s; 2 s makes a scaling test take seconds.
HPA_SYNC_PERIOD = "2s"
# The adapter scrapes every second (its minimum) so a dead endpoint is missing within ~4 s.
ADAPTER_SCRAPE_INTERVAL = "1s"
ADAPTER_SCRAPE_TIMEOUT = "500ms"
# Rates and percentiles cover 20 s: long enough for dozens of requests per pod, short enough
# that a finished load phase leaves the TTFT window within a test's patience.
ADAPTER_WINDOW = "20s"
# The fleet thread looks for pod changes this often; kwok itself reacts within ~100 ms.
FLEET_POLL_SECONDS = 0.25
# Fake nodes: few enough to start instantly, GPUs enough for every scenario's max replicas.
DEFAULT_NODES = 3
GPUS_PER_NODE = 8


def _address_block() -> int:
    """Which block of loopback addresses this run's pods and nodes take: pytest-xdist worker N
    (``gwN``; hack/e2e-test.sh runs several) takes block N, a run without xdist block 0, so two
    control planes on one host never give two fleets the same pod IP."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    block = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    if not 0 <= block <= 120:
        raise RuntimeError(f"pytest-xdist worker {worker!r}: at most 121 address blocks")
    return block


ADDRESS_BLOCK = _address_block()
# Pods get 127.(1+2N).0.0/16 (a /24 per node), nodes 127.(2+2N).0.x: block 0 is 127.1/127.2.
POD_PREFIX = f"127.{1 + 2 * ADDRESS_BLOCK}"
NODE_PREFIX = f"127.{2 + 2 * ADDRESS_BLOCK}"
POD_CIDR = f"{POD_PREFIX}.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
ENGINE_PORT = 8000
DCGM_PORT = 9400
ADAPTER_NAMESPACE = "inferscale-system"
ADAPTER_SERVICE = "inferscale-adapter"
# The session's adapter listens here; a second replica (start_adapter_replica) on another
# loopback address and the same port, as pods of one Deployment do.
ADAPTER_HOST = "127.0.0.1"
# The port of a Service in front of host processes (the chart's adapter Service uses 443).
SERVICE_PORT = 443
DCGM_NAMESPACE = "gpu-operator"
SIM_LABEL = "inferscale.dev/scrape"
START_TIMEOUT = 90.0
# How long kube-apiserver gets to exit after SIGTERM before SIGKILL. Here it has not exited
# within 15 s either (measured), so a longer grace would only make the restart test longer:
# the restart is an abrupt one, every client's connection cut.
APISERVER_STOP_GRACE_SECONDS = 5.0


# kwok Stage: a scheduled Pending pod becomes Running with an IP but *not* Ready; the fleet
# thread marks it Ready once its simulator answers /health, as a kubelet would after a
# readiness probe. (Upstream's pod-ready stage makes pods Ready before anything listens.)
KWOK_POD_START_STAGE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: inferscale-pod-start
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
"""


@dataclass
class HostEndpoint:
    """One endpoint of a Service in front of host processes (``set_host_endpoints``): ready
    and serving while it answers; terminating once its pod would be deleted (then not ready,
    still serving, as the EndpointSlice controller marks a deleted pod's endpoint)."""
    host: str
    ready: bool = True
    terminating: bool = False


class HarnessError(RuntimeError):
    """A component failed to start or misbehaved; the message carries its last log lines."""


def free_port() -> int:
    """A free loopback port outside the ephemeral range: a port from bind(0) may be taken as
    the source port of any outgoing connection before its owner binds it (the adapter binds
    again after a restart); a port outside the range cannot. Falls back to bind(0) on a
    host whose ephemeral range leaves no room."""
    try:
        low, high = (int(v) for v in
                     Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999
    outside = [*range(max(1024, low - 12000), low), *range(high + 1, min(65536, high + 4000))]
    for port in random.sample(outside, min(500, len(outside))):
        if port in _ports_given:  # handed out already, perhaps not bound yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _ports_given.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log(f"no free port outside the ephemeral range {low}-{high}; using {port}")
    _ports_given.add(port)
    return port


_ports_given: set[int] = set()


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# --- Binaries -------------------------------------------------------------------------------

KUBE_COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                   "kubectl", "kwok"]


def ensure_binaries(profile: str | None = None) -> dict[str, str]:
    """Builds (or finds cached) every binary the stack runs; returns name -> path."""
    profile = profile or os.environ.get("INFERSCALE_E2E_PROFILE", "debug")
    t0 = time.monotonic()
    r = run(["bash", str(REPO / "hack/build-binaries.sh"), *KUBE_COMPONENTS])
    if r.returncode != 0:
        raise HarnessError(
            f"hack/build-binaries.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    paths = {}
    for comp in KUBE_COMPONENTS:
        p = run(["bash", str(REPO / "hack/bin-path.sh"), comp])
        if p.returncode != 0:
            raise HarnessError(f"hack/bin-path.sh {comp}: {p.stderr.strip()}")
        paths[comp] = p.stdout.strip()
    paths["kwok-stages"] = str(Path(paths["kwok"]).parent / "stages")
    cargo = ["cargo", "build", "--quiet", "-p", "inferscale-adapter", "-p", "inferscale-sim"]
    if profile == "release":
        cargo.append("--release")
    r = run(cargo, cwd=REPO)
    if r.returncode != 0:
        raise HarnessError(f"{' '.join(cargo)} failed:\n{r.stderr[-4000:]}")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / profile
    # Overrides, e.g. to run the suite against an adapter built elsewhere.
    paths["adapter"] = os.environ.get("INFERSCALE_E2E_ADAPTER_BIN", str(target / "adapter"))
    paths["vllm-sim"] = os.environ.get("INFERSCALE_E2E_SIM_BIN", str(target / "vllm-sim"))
    log(f"binaries ready in {time.monotonic() - t0:.1f}s ({profile} Rust build)")
    return paths


# --- The cluster ----------------------------------------------------------------------------

class Cluster:
    def __init__(self, workdir: str | Path | None = None, nodes: int = DEFAULT_NODES,
                 gpus_per_node: int = GPUS_PER_NODE, adapter_args: list[str] | None = None,
                 keep_workdir: bool | None = None, hpa_sync_period: str = HPA_SYNC_PERIOD,
                 adapter_settings: dict[str, str] | None = None, external_metrics: bool = True,
                 simulators: bool = True):
        self.run_id = uuid.uuid4().hex[:12]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="inferscale-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.node_count = nodes
        self.gpus_per_node = gpus_per_node
        self.extra_adapter_args = adapter_args or []
        # The adapter's scrape flags (make compare runs the defaults: 5 s, 3 s, 60 s).
        self.adapter_settings = {"scrape-interval": ADAPTER_SCRAPE_INTERVAL,
                                 "scrape-timeout": ADAPTER_SCRAPE_TIMEOUT,
                                 "window": ADAPTER_WINDOW, **(adapter_settings or {})}
        self.hpa_sync_period = hpa_sync_period
        # Without it the adapter leaves external.metrics.k8s.io to another owner (KEDA).
        self.external_metrics = external_metrics
        # Without them nothing runs behind vllm-sim pods and no node has a dcgm exporter
        # (make compare serves its fleet from `vllm-sim fleet` itself).
        self.simulators = simulators
        self.keep_workdir = (os.environ.get("INFERSCALE_E2E_KEEP") == "1"
                             if keep_workdir is None else keep_workdir)
        self.procs = ProcessGroup(self.run_id, self.log_dir)
        self.bins: dict[str, str] = {}
        self.pki: Pki | None = None
        self.api: Kube | None = None
        self.adapter: Proc | None = None
        self.fleet: Fleet | None = None
        self.components: dict[str, Proc] = {}
        self.failed = False
        # Namespaces the tests created, in order (clear_namespace empties them again).
        self.test_namespaces: list[str] = []

    # -- lifecycle --

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.failed = True
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self.bins = ensure_binaries()
        self.pki = make_pki(self.workdir / "pki")
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "adapter")}
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        kc = self.workdir / "kubeconfig"
        kc.mkdir(exist_ok=True)
        p = self.pki
        self.kubeconfigs = {
            name: write_kubeconfig(kc / f"{name}.yaml", self.server, p.ca.cert, cert)
            for name, cert in [("admin", p.admin), ("controller-manager", p.controller_manager),
                               ("scheduler", p.scheduler), ("kwok", p.kwok),
                               ("adapter", p.adapter_client), ("nobody", p.nobody)]}
        self.api = Kube("127.0.0.1", self.ports["apiserver"],
                        ssl_context(p.ca.cert, p.admin.cert, p.admin.key))

        self._start_etcd()
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{self.ports['etcd']}/health"),
                   "etcd /health", [self.components["etcd"]], timeout=30)
        self._start_apiserver()
        self._wait(self._apiserver_ready, "kube-apiserver /readyz",
                   [self.components["kube-apiserver"], self.components["etcd"]], timeout=90)
        log(f"control plane API up in {time.monotonic() - t0:.1f}s")

        # Everything below only needs the API: start it all, then wait for all of it.
        self._start_controller_manager()
        self._start_scheduler()
        self._start_kwok()
        with ThreadPoolExecutor(max_workers=4) as pool:
            setup = [pool.submit(self._apply_rbac), pool.submit(self._create_nodes),
                     pool.submit(self._register_adapter)]
            for f in setup:
                f.result()
        if self.simulators:
            self.fleet = Fleet(self)
            self.fleet.start()
        self.start_adapter()
        if self.simulators:
            self._create_dcgm_pods()
        # Registered once the adapter answers, so the aggregator's first look succeeds.
        self.wait_adapter_ready()
        self._register_apiservices()
        self._wait(self._nodes_ready, "kwok to mark the fake nodes Ready",
                   [self.components["kwok"]], timeout=START_TIMEOUT)
        self.wait_adapter_available()
        self._wait(lambda: self.fleet is None or self.fleet.running_dcgm() >= self.node_count,
                   "a dcgm exporter on every fake node",
                   [self.components["kwok"], self.components["kube-scheduler"]],
                   timeout=START_TIMEOUT)
        log(f"stack up in {time.monotonic() - t0:.1f}s (workdir {self.workdir})")

    def stop(self) -> None:
        if self.fleet:
            self.fleet.stop()
        self.procs.stop_all()
        if self.fleet:
            self.fleet.join(timeout=10)
        if self._own_workdir and not self.keep_workdir and not self.failed:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.failed or self.keep_workdir:
            log(f"logs kept in {self.log_dir}")

    # -- components --

    def _start(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        proc = self.procs.start(name, argv, env=env)
        self.components[name] = proc
        return proc

    def _start_etcd(self) -> None:
        e, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._start("etcd", [
            self.bins["etcd"], "--name=e2e", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{e}",
            f"--advertise-client-urls=http://127.0.0.1:{e}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=e2e=http://127.0.0.1:{peer}",
            # A throw-away store: durability costs fsyncs a test run never needs.
            "--unsafe-no-fsync", "--log-level=warn", "--listen-metrics-urls="])

    def _start_apiserver(self) -> None:
        p = self.pki
        self._start("kube-apiserver", [
            self.bins["kube-apiserver"],
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={p.apiserver.cert}", f"--tls-private-key-file={p.apiserver.key}",
            f"--client-ca-file={p.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            # The aggregation layer.
            f"--requestheader-client-ca-file={p.front_proxy_ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.front_proxy_client.cert}",
            f"--proxy-client-key-file={p.front_proxy_client.key}",
            # The aggregator dials one of the Service's ready endpoints (its EndpointSlices),
            # as it must here: no kube-proxy makes a ClusterIP reachable. With more than one
            # adapter behind the Service, a replica whose endpoint turns unready gets no more
            # requests (tests/e2e/test_reliability.py, (m) and (n)).
            "--enable-aggregator-routing=true",
            # No token controller and no node lifecycle controller run here: with these two
            # admission plugins pods would wait for a service account token or a node taint
            # removal that never comes.
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            # The kubernetes Service's Endpoints cannot hold a loopback address; nothing here
            # reaches the API server through that Service.
            "--endpoint-reconciler-type=none",
            "--profiling=false", "--v=1"])

    def restart_apiserver(self, grace: float = APISERVER_STOP_GRACE_SECONDS
                          ) -> tuple[float, int | None, float]:
        """Stops kube-apiserver (SIGTERM, SIGKILL after ``grace``, as the kubelet restarts
        its static pod) and starts it again with the same flags and state (etcd keeps
        running). Returns the seconds it took to exit, its exit code (-9: killed after the
        grace period) and the seconds from its start to /readyz."""
        t_stop = time.monotonic()
        code = self.procs.stop(self.components["kube-apiserver"], grace=grace)
        t_start = time.monotonic()
        self._start_apiserver()
        self._wait(self._apiserver_ready, "kube-apiserver /readyz after its restart",
                   [self.components["kube-apiserver"], self.components["etcd"]], timeout=90)
        return t_start - t_stop, code, time.monotonic() - t_start

    def _start_controller_manager(self) -> None:
        kc = self.kubeconfigs["controller-manager"]
        self._start("kube-controller-manager", [
            self.bins["kube-controller-manager"], f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
            "--controllers=horizontalpodautoscaling,deployment,replicaset,garbagecollector",
            # Each controller as its own service account, as on kubeadm clusters: the HPA
            # reads metrics as system:serviceaccount:kube-system:horizontal-pod-autoscaler,
            # so the adapter's authorization sees the identity it sees in production.
            "--use-service-account-credentials=true",
            f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period}",
            "--v=2"])

    def _start_scheduler(self) -> None:
        kc = self.kubeconfigs["scheduler"]
        self._start("kube-scheduler", [
            self.bins["kube-scheduler"], f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1"])

    def _start_kwok(self) -> None:
        stages = Path(self.bins["kwok-stages"])
        own = self.workdir / "kwok-pod-start.yaml"
        own.write_text(KWOK_POD_START_STAGE)
        # Upstream's node and delete stages; our own start stage instead of pod-ready: pods
        # run unready until the fleet's simulator answers /health (a readiness probe).
        configs = [stages / "node/fast/node-initialize.yaml", own,
                   stages / "pod/fast/pod-delete.yaml"]
        argv = [self.bins["kwok"], f"--kubeconfig={self.kubeconfigs['kwok']}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}", f"--node-ip={NODE_PREFIX}.0.1"]
        for c in configs:
            argv.append(f"--config={c}")
        env = dict(os.environ, HOME=str(self.workdir))  # no ~/.kwok of the user's
        self._start("kwok", argv, env=env)

    def start_adapter(self, wait: bool = False) -> Proc:
        self.adapter = self._start_adapter_process("adapter", ADAPTER_HOST)
        self.components["adapter"] = self.adapter
        if wait:
            self.wait_adapter_ready()
        return self.adapter

    def start_adapter_replica(self, host: str) -> Proc:
        """Another adapter process, on ``host`` (a loopback address other than 127.0.0.1)
        and the first one's port, as a second pod of the adapter's Deployment would be; waits
        for its /readyz. It is not in the Service until ``set_host_endpoints`` puts it there,
        and not a component: its death fails no wait."""
        proc = self._start_adapter_process(f"adapter-{host}", host)
        direct = self.adapter_direct(host=host)

        def ready() -> bool:
            try:
                return direct.raw("GET", "/readyz")[0] == 200
            except OSError:
                return False
        self._wait(ready, f"adapter {host} /readyz", [proc], timeout=60)
        return proc

    def _start_adapter_process(self, name: str, host: str) -> Proc:
        p = self.pki
        argv = [
            self.bins["adapter"], "serve", f"--listen={host}:{self.ports['adapter']}",
            f"--tls-cert-file={p.adapter_serving.cert}",
            f"--tls-private-key-file={p.adapter_serving.key}",
            "--pod-selector=inferscale.dev/scrape=true", "--dcgm-selector=app=nvidia-dcgm-exporter",
            *(f"--{flag}={value}" for flag, value in self.adapter_settings.items()),
            f"--external-metrics={str(self.external_metrics).lower()}",
            # WarmPool recommendations (tests/e2e/test_warm_pool.py installs the CRD and the
            # read access; until then the watch retries).
            "--warm-pools=true", *self.extra_adapter_args]
        env = dict(os.environ, KUBECONFIG=self.kubeconfigs["adapter"],
                   RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        return self.procs.start(name, argv, env=env)

    def stop_adapter(self, sig: int | None = None) -> int | None:
        if not self.adapter:
            return None
        code = self.procs.stop(self.adapter, sig=sig or signal.SIGTERM)
        self.adapter = None
        return code

    def adapter_direct(self, cert=None, ca: str | None = "default",
                       server_hostname: str | None = ADAPTER_SERVICE_DNS,
                       host: str = ADAPTER_HOST) -> Kube:
        """A client talking straight to the adapter at ``host`` (not through the
        aggregator)."""
        ca_file = self.pki.adapter_ca.cert if ca == "default" else ca
        ctx = ssl_context(ca_file, cert.cert if cert else None, cert.key if cert else None)
        return Kube(host, self.ports["adapter"], ctx, server_hostname=server_hostname)

    def wait_adapter_ready(self, timeout: float = 60) -> None:
        direct = self.adapter_direct()

        def ready() -> bool:
            try:
                return direct.raw("GET", "/readyz")[0] == 200
            except OSError:
                return False
        self._wait(ready, "adapter /readyz", [self.adapter], timeout=timeout)

    def wait_adapter_available(self, timeout: float = 90) -> None:
        self.wait_adapter_ready(timeout)
        self._wait(self._apiservices_available,
                   "APIServices Available (aggregator -> adapter)",
                   [self.adapter, self.components["kube-apiserver"]], timeout=timeout)

    # -- setup objects --

    def _apply_rbac(self) -> None:
        self._wait(lambda: _exists(self.api, "/api/v1/namespaces/kube-system"),
                   "namespace kube-system", [self.components["kube-apiserver"]], timeout=30)
        # The adapter's real RBAC, as shipped: it runs with its service account's user name.
        r = self.kubectl("apply", "-f", str(REPO / "deploy/base/rbac.yaml"), check=False)
        if r.returncode != 0:
            raise HarnessError(f"kubectl apply deploy/base/rbac.yaml: {r.stderr}")

    def _register_adapter(self) -> None:
        self.api.apply({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ADAPTER_NAMESPACE}})
        # The aggregator dials a ready endpoint of the Service and verifies the serving
        # certificate against inferscale-adapter.inferscale-system.svc.
        self.register_host_service(ADAPTER_NAMESPACE, ADAPTER_SERVICE, self.ports["adapter"])

    def register_host_service(self, namespace: str, name: str, target_port: int,
                              hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        """A Service (port 443, named https) whose endpoints are processes on the host,
        listening on ``target_port`` at each of ``hosts``: what an aggregated API server's
        Service is in a cluster, with the endpoint list kept by the harness (the Service has
        no selector, so no controller touches it). See ``set_host_endpoints``."""
        self.api.apply({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ClusterIP",
                     "ports": [{"name": "https", "port": SERVICE_PORT,
                                "targetPort": target_port, "protocol": "TCP"}]}})
        self.set_host_endpoints(namespace, name, target_port,
                                [HostEndpoint(h) for h in hosts])

    def set_host_endpoints(self, namespace: str, name: str, target_port: int,
                           endpoints: list["HostEndpoint"]) -> None:
        """Replaces the Service's endpoints with ``endpoints`` (what the EndpointSlice
        controller writes from the pods' readiness and deletion). The slice's addressType is
        FQDN: an IPv4 slice refuses loopback addresses (ValidateEndpointIP), and the
        aggregator's resolver takes an endpoint's first address as the host to dial whatever
        the type (k8s.io/apiserver pkg/util/proxy ResolveEndpoint), so a loopback IP literal
        there is dialled as it is."""
        self.api.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-host", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "e2e.inferscale.dev"}},
            "addressType": "FQDN",
            "ports": [{"name": "https", "port": target_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [e.host],
                           "conditions": {"ready": e.ready and not e.terminating,
                                          "serving": e.ready,
                                          "terminating": e.terminating}}
                          for e in endpoints]})

    def _apiservice_versions(self) -> list[tuple[str, str, int]]:
        """(group, version, versionPriority) of every APIService the adapter backs."""
        versions = [("custom.metrics.k8s.io", "v1beta2", 200),
                    ("custom.metrics.k8s.io", "v1beta1", 100)]
        if self.external_metrics:
            versions.append(("external.metrics.k8s.io", "v1beta1", 100))
        return versions

    def _register_apiservices(self) -> None:
        ca_bundle = base64.b64encode(Path(self.pki.adapter_ca.cert).read_bytes()).decode()
        for group, version, prio in self._apiservice_versions():
            self.api.apply({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": f"{version}.{group}"},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": 100,
                         "versionPriority": prio, "caBundle": ca_bundle,
                         "service": {"name": ADAPTER_SERVICE,
                                     "namespace": ADAPTER_NAMESPACE,
                                     "port": SERVICE_PORT}}})

    def node_name(self, i: int) -> str:
        return f"kwok-gpu-{i}"

    def _create_nodes(self) -> None:
        for i in range(self.node_count):
            name = self.node_name(i)
            resources = {"cpu": "64", "memory": "512Gi", "pods": "110",
                         "nvidia.com/gpu": str(self.gpus_per_node)}
            self.api.apply({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name,
                             "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                                        "nvidia.com/gpu.present": "true"}},
                "spec": {"podCIDR": f"{POD_PREFIX}.{i + 1}.0/24"}})
            self.api.apply_status({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"allocatable": resources, "capacity": resources,
                           "addresses": [{"type": "InternalIP", "address": f"{NODE_PREFIX}.0.{i + 1}"},
                                         {"type": "Hostname", "address": name}]}})

    def _create_dcgm_pods(self) -> None:
        self.api.apply({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": DCGM_NAMESPACE}})
        for i in range(self.node_count):
            node = self.node_name(i)
            self.api.apply({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"nvidia-dcgm-exporter-{node}", "namespace": DCGM_NAMESPACE,
                             "labels": {"app": "nvidia-dcgm-exporter"}},
                "spec": {"nodeName": node,
                         "tolerations": [{"operator": "Exists"}],
                         "containers": [{
                             "name": "nvidia-dcgm-exporter", "image": "vllm-sim",
                             "command": ["vllm-sim"],
                             "args": ["dcgm", "--node", node,
                                      "--gpus", str(self.gpus_per_node)],
                             "ports": [{"name": "metrics", "containerPort": DCGM_PORT}]}]}})

    # -- readiness checks --

    def _apiserver_ready(self) -> bool:
        try:
            return self.api.raw("GET", "/readyz")[0] == 200
        except OSError:
            return False

    def _nodes_ready(self) -> bool:
        nodes = self.api.get("/api/v1/nodes", labelSelector="type=kwok")["items"]
        ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in n.get("status", {}).get("conditions", []))]
        return len(ready) >= self.node_count

    def _apiservices_available(self) -> bool:
        for group, version, _ in self._apiservice_versions():
            name = f"{version}.{group}"
            svc = self.api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
            conds = svc.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Available" and c["status"] == "True" for c in conds):
                return False
        return True

    def apiservice_conditions(self) -> dict[str, str]:
        out = {}
        for svc in self.api.get("/apis/apiregistration.k8s.io/v1/apiservices")["items"]:
            if "metrics" in svc["metadata"]["name"]:
                for c in svc.get("status", {}).get("conditions", []):
                    if c["type"] == "Available":
                        out[svc["metadata"]["name"]] = f"{c['status']} {c.get('message', '')}"
        return out

    def _wait(self, cond: Callable[[], bool], what: str, watch: list[Proc | None],
              timeout: float = 60, interval: float = 0.2) -> None:
        """Polls ``cond``; fails early, with logs, when a watched process dies."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            for p in watch:
                if p is not None and not p.alive():
                    raise HarnessError(
                        f"{p.name} exited (code {p.popen.returncode}) while waiting for {what}; "
                        f"last lines of {p.log_path}:\n{p.log_tail(50)}")
            try:
                if cond():
                    return
                last_error = None
            except (OSError, KubeError) as e:
                last_error = e
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.log_tail(50)}"
                                 for p in watch if p is not None)
                raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}"
                                   f"{f' (last error: {last_error})' if last_error else ''}\n"
                                   f"{logs}")
            time.sleep(interval)

    # -- kubectl and reads --

    def kubectl(self, *args: str, as_user: str | None = None, input: str | None = None,
                check: bool = True, kubeconfig: str = "admin",
                timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [self.bins["kubectl"], f"--kubeconfig={self.kubeconfigs[kubeconfig]}", *args]
        if as_user:
            argv.append(f"--as={as_user}")
        r = run(argv, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stderr.strip()}")
        return r

    def get_raw(self, path: str, as_user: str | None = None) -> Any:
        """``kubectl get --raw PATH`` through the aggregator, parsed as JSON."""
        return json.loads(self.kubectl("get", "--raw", path, "--request-timeout=20s",
                                       as_user=as_user).stdout)

    def get_raw_status(self, path: str, as_user: str | None = None,
                       kubeconfig: str = "admin") -> tuple[int, str]:
        """``kubectl get --raw``'s exit code and combined output, for refusals."""
        r = self.kubectl("get", "--raw", path, as_user=as_user, check=False,
                         kubeconfig=kubeconfig)
        return r.returncode, (r.stdout + r.stderr)

    def pods(self, namespace: str, selector: str | None = None) -> list[dict]:
        params = {"labelSelector": selector} if selector else {}
        return self.api.get(f"/api/v1/namespaces/{namespace}/pods", **params)["items"]

    def hpa(self, namespace: str, name: str) -> dict:
        return self.api.get(
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}")

    def deployment(self, namespace: str, name: str) -> dict:
        return self.api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def events(self, namespace: str, involved: str | None = None) -> list[dict]:
        params = {}
        if involved:
            params["fieldSelector"] = f"involvedObject.name={involved}"
        items = self.api.get(f"/api/v1/namespaces/{namespace}/events", **params)["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    # -- workloads --

    def create_namespace(self, name: str) -> None:
        self.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if name not in self.test_namespaces:
            self.test_namespaces.append(name)

    def clear_namespace(self, namespace: str, timeout: float = 60) -> None:
        """Deletes the namespace's HPAs and Deployments and waits until its pods are gone
        (their simulators stopped, their GPUs free), so that what a test leaves behind cannot
        change what the next one sees, whichever runs next. The Namespace object stays: no
        namespace controller runs here."""
        self.api.delete(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
        self.api.delete(f"/apis/apps/v1/namespaces/{namespace}/deployments"
                        "?propagationPolicy=Background")
        self.wait_for(lambda: not self.pods(namespace), f"the pods of {namespace} to be gone",
                      timeout)

    def create_deployment(self, namespace: str, name: str, replicas: int = 1,
                          model: str = "qwen2.5-7b", max_num_seqs: int = 4,
                          ttft: str = "200ms", itl: str = "20ms", gpus: int = 1,
                          sim_args: list[str] | None = None,
                          pod_annotations: dict | None = None, pod_labels: dict | None = None,
                          node_selector: dict | None = None) -> dict:
        """A Deployment of fake vLLM pods: what vllm-deployment.yaml is, with vllm-sim as the
        container (the fleet thread runs ``vllm-sim`` with these args on the pod's IP)."""
        self.create_namespace(namespace)
        args = ["serve", "--model", model, "--max-num-seqs", str(max_num_seqs),
                "--ttft", ttft, "--itl", itl, *(sim_args or [])]
        return self.api.apply({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": name, SIM_LABEL: "true",
                                   **(pod_labels or {})},
                        "annotations": {"inferscale.dev/port": str(ENGINE_PORT),
                                        "inferscale.dev/path": "/metrics",
                                        **(pod_annotations or {})}},
                    "spec": {
                        **({"nodeSelector": node_selector} if node_selector else {}),
                        "tolerations": [{"operator": "Exists"}],
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{
                            "name": "vllm", "image": "vllm-sim", "command": ["vllm-sim"],
                            "args": args,
                            "ports": [{"name": "http", "containerPort": ENGINE_PORT}],
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)},
                                          "requests": {"nvidia.com/gpu": str(gpus)}}}]}}}})

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.api.request(
            "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
            {"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")

    def create_hpa(self, namespace: str, name: str, target: str, metric: str,
                   average_value: str, min_replicas: int = 1, max_replicas: int = 6,
                   scale_down_window: int = 15, scale_up_window: int = 0,
                   more_metrics: list[tuple[str, str]] | None = None) -> dict:
        """An HPA on Pods metric ``metric`` (AverageValue ``average_value``), plus each
        (metric, AverageValue) of ``more_metrics`` (the HPA follows the largest proposal)."""
        pods_metrics = [{"type": "Pods", "pods": {
            "metric": {"name": m},
            "target": {"type": "AverageValue", "averageValue": v}}}
            for m, v in [(metric, average_value), *(more_metrics or [])]]
        return self.api.apply({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": target},
                "minReplicas": min_replicas, "maxReplicas": max_replicas,
                "metrics": pods_metrics,
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": scale_up_window,
                                "selectPolicy": "Max",
                                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 5},
                                             {"type": "Percent", "value": 100,
                                              "periodSeconds": 5}]},
                    "scaleDown": {"stabilizationWindowSeconds": scale_down_window,
                                  "policies": [{"type": "Percent", "value": 100,
                                                "periodSeconds": 5}]}}}})

    def ready_pod_ips(self, namespace: str, selector: str) -> list[str]:
        out = []
        for p in self.pods(namespace, selector):
            st = p.get("status", {})
            if p["metadata"].get("deletionTimestamp") or not st.get("podIP"):
                continue
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in st.get("conditions", [])):
                out.append(st["podIP"])
        return sorted(out)

    def wait_for(self, cond: Callable[[], Any], what: str, timeout: float = 60,
                 interval: float = 0.5) -> Any:
        """Polls ``cond`` until it returns something truthy (returned); raises with the
        stack's health on timeout."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            self.check_components()
            try:
                value = cond()
                if value:
                    return value
            except (KubeError, HarnessError, OSError, ValueError, KeyError,
                    subprocess.TimeoutExpired, http.client.HTTPException) as e:
                last_error = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                     + (f"; last error: {last_error}" if last_error else ""))
            time.sleep(interval)

    def check_components(self) -> None:
        """Raises if a control-plane component (or the adapter) died."""
        for name, p in self.components.items():
            if name == "adapter" and p is not self.adapter:
                continue
            if not p.alive():
                raise HarnessError(f"{name} died (code {p.popen.returncode}); last lines of "
                                   f"{p.log_path}:\n{p.log_tail(50)}")

    def log_tails(self, lines: int = 50) -> str:
        parts = []
        for f in sorted(self.log_dir.glob("*.log")):
            if f.name.startswith("sim-") and lines > 20:
                continue
            parts.append(f"--- {f.name}:\n{tail(f, lines)}")
        if self.fleet:
            parts.append("--- fleet: " + "; ".join(self.fleet.history[-30:]))
        return "\n".join(parts)


def _http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _exists(api: Kube, path: str) -> bool:
    try:
        api.get(path)
        return True
    except KubeError as e:
        if e.status == 404:
            return False
        raise


# --- A second adapter replica behind the Service ------------------------------------------

# How often the kubelet stand-in looks for an exited adapter replica: the kubelet's PLEG
# relists containers every second and marks the pod unready when its container is gone.
REPLICA_EXIT_POLL_SECONDS = 1.0


class AdapterReplica(threading.Thread):
    """A second adapter process behind the adapter's Service, for a ``with`` block.

    Started on ``host`` (another loopback address, the session adapter's port), put in the
    Service's endpoints next to the session's adapter once it serves, and watched the way
    the kubelet and the EndpointSlice controller watch a pod: its endpoint turns unready (not
    serving) within ``REPLICA_EXIT_POLL_SECONDS`` of the process exiting, and ``terminate``
    marks it terminating (not ready, still serving) right after the SIGTERM, as deleting its
    pod does. Leaves the Service as it found it: the session's adapter alone.
    """

    def __init__(self, cluster: Cluster, host: str):
        super().__init__(daemon=True, name=f"adapter-replica-{host}")
        self.c, self.host = cluster, host
        self.proc: Proc | None = None
        self._halt = threading.Event()
        # monotonic time the endpoint left the ready set, and why ("exited", "terminating").
        self.unready_at: float | None = None
        self.unready_reason: str | None = None

    def __enter__(self) -> "AdapterReplica":
        self.proc = self.c.start_adapter_replica(self.host)
        self._publish(HostEndpoint(self.host))
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(timeout=5)
        if self.proc is not None:
            self.c.procs.stop(self.proc)
        self._publish(None)

    def _publish(self, replica: HostEndpoint | None) -> None:
        self.c.set_host_endpoints(ADAPTER_NAMESPACE, ADAPTER_SERVICE, self.c.ports["adapter"],
                                  [HostEndpoint(ADAPTER_HOST), *([replica] if replica else [])])

    def kill(self) -> float:
        """SIGKILL (an OOM kill, a node's sudden loss of the container); returns when."""
        os.kill(self.proc.pid, signal.SIGKILL)
        return time.monotonic()

    def terminate(self) -> float:
        """What deleting the replica's pod does: the kubelet's SIGTERM and, right after it,
        the EndpointSlice controller's terminating endpoint. Returns the time of the
        signal."""
        os.kill(self.proc.pid, signal.SIGTERM)
        t = time.monotonic()
        self._publish(HostEndpoint(self.host, ready=True, terminating=True))
        self._mark("terminating")
        return t

    def _mark(self, reason: str) -> None:
        if self.unready_at is None:
            self.unready_at, self.unready_reason = time.monotonic(), reason

    def run(self) -> None:
        while not self._halt.wait(REPLICA_EXIT_POLL_SECONDS):
            if self.proc is not None and not self.proc.alive():
                self._publish(HostEndpoint(self.host, ready=False))
                self._mark("exited")
                return


# --- The fleet: processes behind kwok's pods ------------------------------------------------

HOLD_UNREADY_ANNOTATION = "e2e.inferscale.dev/hold-unready"
# A cold start to beat: the fake pod turns Ready no sooner than this many seconds after it was
# created (image pull, weight load and graph capture of a real replica, in short).
READY_AFTER_ANNOTATION = "e2e.inferscale.dev/ready-after-seconds"


@dataclass
class SimProc:
    proc: Proc
    addr: str
    pod: dict
    healthy: bool = False


class Fleet(threading.Thread):
    """Runs ``vllm-sim`` for every Running pod whose container command is ``vllm-sim``.

    kwok only pretends pods run; this thread is the kubelet that makes the pretence true for
    the scraper: a ``vllm-sim serve`` on ``podIP:8000`` per engine pod, a ``vllm-sim dcgm`` on
    ``podIP:9400`` per dcgm-exporter pod, whose assignments file (re-read on every scrape) says
    how many GPUs of its node each engine pod holds. Like a readiness probe, it marks a pod
    Ready once its simulator answers ``/health`` (never while the pod has the annotation
    ``e2e.inferscale.dev/hold-unready``), and unready again if the process dies. Processes are
    keyed by pod UID: a pod that goes away (or whose IP changes) has its process stopped
    before any new one may take the address.
    """

    def __init__(self, cluster: Cluster):
        super().__init__(name="fleet", daemon=True)
        self.c = cluster
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.procs: dict[str, SimProc] = {}                  # pod uid -> its simulator
        self.gpus: dict[str, dict[str, list[int]]] = {}      # node -> uid -> GPU indices
        self.history: list[str] = []
        self.crashed: list[str] = []
        self.dir = cluster.workdir / "fleet"
        self.dir.mkdir(exist_ok=True)
        self.error: BaseException | None = None
        self._assignments: dict[str, str] = {}

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        api = self.c.api
        while not self._halt.is_set():
            try:
                pods = api.get("/api/v1/pods")["items"]
                self._sync(pods)
            except BaseException as e:  # keep going: one failed poll is not fatal
                if self._halt.is_set():
                    break
                self.error = e
                self._note(f"poll error: {e}")
            self._halt.wait(FLEET_POLL_SECONDS)
        with self._lock:
            for sim in self.procs.values():
                self.c.procs.stop(sim.proc, grace=2)
            self.procs.clear()

    def _note(self, msg: str) -> None:
        self.history.append(f"{time.strftime('%H:%M:%S')} {msg}")
        if len(self.history) > 2000:
            del self.history[:1000]

    def _sync(self, pods: list[dict]) -> None:
        wanted: dict[str, dict] = {}
        for pod in pods:
            spec = pod.get("spec", {})
            containers = spec.get("containers", [])
            if not containers or containers[0].get("command", [None])[0] != "vllm-sim":
                continue
            st = pod.get("status", {})
            if (st.get("phase") != "Running" or not st.get("podIP")
                    or pod["metadata"].get("deletionTimestamp")):
                continue
            wanted[pod["metadata"]["uid"]] = pod

        with self._lock:
            # Stop first: a new pod may have been given a departed pod's IP. All departing
            # simulators share one grace period (a scale-down of k pods must not hold the
            # fleet for k of them).
            departing = [(uid, sim) for uid, sim in self.procs.items()
                         if uid not in wanted or _addr(wanted[uid]) != sim.addr]
            self.c.procs.stop_many([sim.proc for _, sim in departing], grace=2)
            for uid, sim in departing:
                del self.procs[uid]
                self._release_gpus(uid)
                self._note(f"stopped {_pod_name(sim.pod)} at {sim.addr}")
            for uid, sim in list(self.procs.items()):
                if not sim.proc.alive():
                    # A kubelet would restart the container; do that, and say so loudly: a
                    # crashing simulator is a bug to see, not to hide.
                    code = sim.proc.popen.returncode
                    self.crashed.append(f"{_pod_name(sim.pod)} exit {code}: "
                                        f"{sim.proc.log_tail(10)}")
                    self._note(f"CRASHED {_pod_name(sim.pod)} (exit {code}); restarting")
                    self.c.procs.stop(sim.proc)
                    del self.procs[uid]
            # GPUs for engine pods before their exporters read the assignments.
            for uid, pod in wanted.items():
                if _is_engine(pod):
                    self._assign_gpus(uid, pod)
            self._write_assignments(wanted)
            for uid, pod in wanted.items():
                sim = self.procs.get(uid)
                if sim is None:
                    addr = _addr(pod)
                    sim = SimProc(self._start_sim(pod, addr), addr, pod)
                    self.procs[uid] = sim
                    self._note(f"started {_pod_name(pod)} at {addr}")
                sim.pod = pod
                if not sim.healthy:
                    sim.healthy = _healthy(sim.addr)
                self._set_ready(pod, sim.healthy and not _holds_unready(pod)
                                and _cold_start_over(pod))

    def _set_ready(self, pod: dict, ready: bool) -> None:
        if _is_ready(pod) == ready:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = "True" if ready else "False"
        conds = [{"type": t, "status": status, "lastTransitionTime": now,
                  "reason": None if ready else "ContainersNotReady"}
                 for t in ("Ready", "ContainersReady")]
        patch = {"status": {"conditions": conds, "containerStatuses": [
            {"name": c["name"], "ready": ready} for c in pod["spec"]["containers"]]}}
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            self.c.api.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", patch,
                               content_type="application/strategic-merge-patch+json")
            self._note(f"{ns}/{name} Ready={status}")
        except KubeError as e:
            if e.status != 404:  # gone meanwhile: nothing to mark
                raise

    def _start_sim(self, pod: dict, addr: str) -> Proc:
        c = pod["spec"]["containers"][0]
        ip, port = addr.rsplit(":", 1)
        argv = [self.c.bins["vllm-sim"], *c.get("args", []), "--host", ip, "--port", port]
        if not _is_engine(pod):
            node = pod["spec"].get("nodeName", "")
            argv += ["--assignments", str(self._assignments_file(node))]
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("SIM_LOG", "info"))
        return self.c.procs.start(f"sim {ns}/{name}", argv, env=env,
                                  log_name=f"sim-{ns}-{name}")

    def _assignments_file(self, node: str) -> Path:
        return self.dir / f"dcgm-{node}.json"

    def _assign_gpus(self, uid: str, pod: dict) -> None:
        node = pod["spec"].get("nodeName")
        if not node:
            return
        held = self.gpus.setdefault(node, {})
        if uid in held:
            return
        want = int(pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
                   .get("nvidia.com/gpu", "0"))
        used = {g for gs in held.values() for g in gs}
        free = [g for g in range(self.c.gpus_per_node) if g not in used]
        held[uid] = free[:want]

    def _release_gpus(self, uid: str) -> None:
        for held in self.gpus.values():
            held.pop(uid, None)

    def _write_assignments(self, wanted: dict[str, dict]) -> None:
        for node, held in self.gpus.items():
            for uid in [u for u in held if u not in wanted]:
                del held[u]
        for i in range(self.c.node_count):
            node = self.c.node_name(i)
            entries = []
            # The exporter hands GPUs out in list order, so list holders by their first GPU.
            held = sorted(self.gpus.get(node, {}).items(), key=lambda kv: (kv[1] or [99])[0])
            for uid, gpus in held:
                pod = wanted[uid]
                entries.append({
                    "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                    "container": pod["spec"]["containers"][0]["name"], "gpus": len(gpus),
                    "metrics_url": f"http://{_addr(pod)}/metrics",
                    "max_num_seqs": _arg_int(pod, "--max-num-seqs", 256)})
            text = json.dumps(entries, indent=1)
            if self._assignments.get(node) != text:
                path = self._assignments_file(node)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
                self._assignments[node] = text

    # -- views for tests --

    def running_dcgm(self) -> int:
        with self._lock:
            return sum(1 for sim in self.procs.values()
                       if not _is_engine(sim.pod) and sim.healthy and sim.proc.alive())

    def sim_address(self, namespace: str, pod_name: str) -> str | None:
        """The simulator's address once it answers /health."""
        with self._lock:
            for sim in self.procs.values():
                meta = sim.pod["metadata"]
                if (meta["namespace"], meta["name"]) == (namespace, pod_name) and sim.healthy:
                    return sim.addr
        return None


def _healthy(addr: str) -> bool:
    import http.client
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=0.5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _holds_unready(pod: dict) -> bool:
    return pod["metadata"].get("annotations", {}).get(HOLD_UNREADY_ANNOTATION) == "true"


def _cold_start_over(pod: dict) -> bool:
    delay = pod["metadata"].get("annotations", {}).get(READY_AFTER_ANNOTATION)
    if not delay:
        return True
    created = calendar.timegm(time.strptime(pod["metadata"]["creationTimestamp"],
                                             "%Y-%m-%dT%H:%M:%SZ"))
    return time.time() - created >= float(delay)


def _is_engine(pod: dict) -> bool:
    return pod["metadata"].get("labels", {}).get(SIM_LABEL) == "true"


def _arg_int(pod: dict, flag: str, default: int) -> int:
    args = pod["spec"]["containers"][0].get("args", [])
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith(flag + "="):
            return int(a.split("=", 1)[1])
    return default


def _pod_name(pod: dict) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _addr(pod: dict) -> str:
    ann = pod["metadata"].get("annotations", {})
    default = ENGINE_PORT if _is_engine(pod) else DCGM_PORT
    port = ann.get("inferscale.dev/port", str(default))
    return f"{pod['status']['podIP']}:{port}"
