#!/usr/bin/env python3
"""Hostile HTTP clients against the adapter, with a normal client's latency measured during
each attack (issue 8 item 7). A bench, not a test: it prints a table and asserts nothing.

Plain mode (the default) starts, on loopback only: one ``vllm-sim serve`` and the adapter in
standalone mode (plain HTTP, default connection limits) scraping it. ``--tls`` instead boots
the e2e harness' control plane (tests/e2e/cluster.py: etcd, kube-apiserver with the
aggregation layer, kwok) with the adapter in serve mode as the harness runs it: TLS with its
serving certificate, front-proxy (requestheader) authentication, SubjectAccessReviews to
kube-apiserver; 10 kwok pods in namespace ``llm`` served by ``vllm-sim fleet``. Its loopback
block is the one ``PYTEST_XDIST_WORKER=gwN`` names, so it runs beside the e2e suite. Either
way the adapter's file-descriptor limit is ``--nofile`` (default 1024, so 10,000 connections
exceed it). Then, for each attack in turn, ``--seconds`` long (bounded loops that stop by
themselves): a normal client sends one metric request after another on a keep-alive
connection (reconnecting when closed) and records each latency; the attacker runs beside it.
Over TLS the normal client is the aggregator (front-proxy client certificate, the HPA
controller's user in X-Remote-User/X-Remote-Group) and the attacker has no client
certificate, as anyone who can reach the port. Prints, per attack: what the attacker got, and
the normal client's request count, errors, p50 and p99.

TLS adds three attacks: 500 connections that send half a ClientHello and then nothing; a
handshake flood (4 clients completing TLS handshakes and closing, in a loop); and HTTP/2 over
TLS (ALPN h2) opening 100 streams per connection and resetting each at once (rapid reset).
"10,000 silent connections" over TLS are TCP connections whose handshake never starts.

Usage: hack/attack-bench.py [--adapter-bin target/release/adapter] [--sim-bin ...]
       [--seconds 8] [--nofile 1024] [--tls]
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATH = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_num_requests_waiting"
HPA_HEADERS = {"X-Remote-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
               "X-Remote-Group": "system:serviceaccounts"}


class Endpoint:
    """How to reach the adapter: plain TCP (standalone) or TLS (serve mode). ``connect`` is
    the attacker's connection (TLS without a client certificate); ``normal`` the normal
    client's (over TLS: the aggregator's front-proxy certificate and X-Remote-* headers)."""

    def __init__(self, port: int, tls: dict | None = None):
        self.port = port
        self.tls = tls
        self.headers = HPA_HEADERS if tls else {}
        if tls:
            self.attacker_ctx = self.context(None, ["http/1.1"])
            self.h2_ctx = self.context(None, ["h2"])
            self.normal_ctx = self.context((tls["cert"], tls["key"]), ["http/1.1"])

    def context(self, cert: tuple[str, str] | None, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.tls["ca"])
        if cert:
            ctx.load_cert_chain(*cert)
        ctx.set_alpn_protocols(alpn)
        return ctx

    def tcp(self, timeout: float = 5) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def connect(self, timeout: float = 5, ctx: ssl.SSLContext | None = None) -> socket.socket:
        s = self.tcp(timeout)
        if not self.tls:
            return s
        try:
            return (ctx or self.attacker_ctx).wrap_socket(s, server_hostname=self.tls["name"])
        except BaseException:
            s.close()
            raise

    def normal(self) -> http.client.HTTPConnection:
        if not self.tls:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5,
                                           context=self.normal_ctx)
        # Verify the certificate against the Service name, as the aggregator does.
        conn.connect = lambda: setattr(conn, "sock", self.normal_ctx.wrap_socket(
            self.tcp(5), server_hostname=self.tls["name"]))
        return conn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"127.0.0.1:{port}{path} did not answer 200 within {timeout}s")


class NormalClient(threading.Thread):
    def __init__(self, endpoint: Endpoint, stop: threading.Event):
        super().__init__(daemon=True)
        self.endpoint, self.stop_event = endpoint, stop
        self.latencies: list[float] = []
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        conn = None
        while not self.stop_event.is_set():
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = self.endpoint.normal()
                conn.request("GET", PATH, headers=self.endpoint.headers)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
                self.latencies.append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 — every failure is counted
                self.errors += 1
                self.last_error = str(e)[:80]
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)

    def summary(self) -> str:
        lat = sorted(self.latencies)
        if not lat:
            return f"0 ok, {self.errors} errors"
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (f"{len(lat)} ok, {self.errors} errors, p50 {statistics.median(lat) * 1000:.2f} ms, "
                f"p99 {p99 * 1000:.2f} ms")


def raw_request(endpoint: Endpoint, data: bytes, timeout: float = 5,
                authenticated: bool = False) -> str:
    """Sends ``data``; returns the status line (or what happened)."""
    try:
        ctx = endpoint.normal_ctx if authenticated else None
        with endpoint.connect(timeout, ctx=ctx) as s:
            s.sendall(data)
            buf = s.recv(4096)
            if not buf:
                return "closed"
            if not buf.startswith(b"HTTP/"):
                return "HTTP/2 frames (h2c answered)"
            return buf.split(b"\r\n", 1)[0].decode(errors="replace")[:40]
    except OSError as e:
        return type(e).__name__


def repeat(endpoint: Endpoint, data: bytes, stop: threading.Event, outcomes: dict,
           authenticated: bool = False) -> None:
    """Sends ``data`` on a new connection in a loop; ``authenticated``: over TLS with the
    normal client's certificate (the request then gets past authentication)."""
    while not stop.is_set():
        o = raw_request(endpoint, data, authenticated=authenticated)
        outcomes[o] = outcomes.get(o, 0) + 1


def client_hello(endpoint: Endpoint) -> bytes:
    """The first flight of a real TLS handshake (the ClientHello record) of this endpoint's
    attacker context, without a server."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = endpoint.attacker_ctx.wrap_bio(incoming, outgoing, server_hostname=endpoint.tls["name"])
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def held_connections(endpoint: Endpoint, count: int, stop: threading.Event, outcomes: dict,
                     how: str) -> None:
    """Opens ``count`` connections that send nothing (``silent``: over TLS, not even a
    ClientHello), trickle a request-header byte a second (``trickle``: over TLS, after a
    complete handshake) or send half a ClientHello and then nothing (``half-hello``), and
    records how each ended."""
    socks = []   # (socket, when it was opened)
    half = client_hello(endpoint)[:100] if how == "half-hello" else b""
    for _ in range(count):
        try:
            if how == "trickle":
                s = endpoint.connect(timeout=5)
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            else:
                s = endpoint.tcp(timeout=2)
                if half:
                    s.sendall(half)
            s.setblocking(False)
            socks.append((s, time.monotonic()))
        except OSError as e:
            outcomes[f"connect {type(e).__name__}"] = outcomes.get(
                f"connect {type(e).__name__}", 0) + 1
        if stop.is_set():
            break
    outcomes["opened"] = len(socks)
    closed_after: list[float] = []
    while not stop.is_set() and socks:
        for entry in list(socks):
            s, opened = entry
            try:
                if how == "trickle":
                    s.send(b"X")
                if s.recv(4096) == b"":
                    raise ConnectionResetError
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except OSError:
                closed_after.append(time.monotonic() - opened)
                socks.remove(entry)
                s.close()
        stop.wait(1.0)
    outcomes["closed by the adapter"] = len(closed_after)
    if closed_after:
        outcomes["closed after (median s since opened)"] = round(
            statistics.median(closed_after), 1)
    if socks:
        # Still open when the run ended: younger than any timeout that would close them?
        outcomes["still open at the end (oldest, s)"] = round(
            time.monotonic() - min(t for _, t in socks), 1)
    for s, _ in socks:
        s.close()


def handshake_flood(endpoint: Endpoint, stop: threading.Event, outcomes: dict) -> None:
    """Complete TLS handshakes and close at once, in a loop."""
    while not stop.is_set():
        try:
            endpoint.connect(timeout=5).close()
            o = "handshakes completed"
        except OSError as e:
            o = type(e).__name__
        outcomes[o] = outcomes.get(o, 0) + 1


def h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name: str, value: str) -> bytes:
    """A header field as an HPACK literal without indexing (names and values < 127 bytes)."""
    return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def h2_rapid_reset(endpoint: Endpoint, stop: threading.Event, outcomes: dict) -> None:
    """HTTP/2 over TLS (ALPN h2): 100 streams per connection, each HEADERS (END_STREAM)
    followed at once by RST_STREAM(CANCEL); records how the server answered."""
    block = b"".join(hpack_literal(n, v) for n, v in (
        (":method", "GET"), (":scheme", "https"), (":path", PATH),
        (":authority", endpoint.tls["name"])))
    while not stop.is_set():
        try:
            with endpoint.connect(timeout=5, ctx=endpoint.h2_ctx) as s:
                if s.selected_alpn_protocol() != "h2":
                    o = f"ALPN {s.selected_alpn_protocol()}"
                else:
                    out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", h2_frame(4, 0, 0, b"")]
                    for i in range(100):
                        stream = 1 + 2 * i
                        out.append(h2_frame(1, 0x5, stream, block))       # END_STREAM|END_HEADERS
                        out.append(h2_frame(3, 0, stream, struct.pack(">I", 8)))  # CANCEL
                    s.sendall(b"".join(out))
                    s.settimeout(2)
                    got = b""
                    try:
                        while len(got) < 1 << 16:
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            got += chunk
                    except (TimeoutError, socket.timeout):
                        pass
                    # Frame types seen: GOAWAY (7) means the server ended the connection.
                    kinds, i = set(), 0
                    while i + 9 <= len(got):
                        length = int.from_bytes(got[i:i + 3], "big")
                        kinds.add(got[i + 3])
                        i += 9 + length
                    o = "GOAWAY" if 7 in kinds else (
                        "answered, no GOAWAY" if 1 in kinds or 0 in kinds else "no answer")
        except OSError as e:
            o = type(e).__name__
        outcomes[o] = outcomes.get(o, 0) + 1


def start_tls_plane(args, procs_note: list) -> tuple[Endpoint, object, int]:
    """The e2e harness' control plane with the adapter in serve mode (TLS, delegated authn
    and authz) under an ``--nofile`` descriptor limit; 10 kwok pods in ``llm``."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.cluster import Cluster
    from tests.e2e.pki import ADAPTER_SERVICE_DNS
    from tests.perf.compare import create_kwok_fleet
    wrapper = Path(tempfile.mkdtemp(prefix="inferscale-attack-")) / "adapter"
    # prlimit sets both limits and execs the adapter (same pid, so the harness' process
    # handling is unchanged); the adapter raises its soft limit to the hard one at start.
    wrapper.write_text(f"#!/bin/sh\nexec prlimit --nofile={args.nofile}:{args.nofile} "
                       f"{Path(args.adapter_bin).resolve()} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["INFERSCALE_E2E_ADAPTER_BIN"] = str(wrapper)
    os.environ["INFERSCALE_E2E_SIM_BIN"] = str(Path(args.sim_bin).resolve())
    c = Cluster(external_metrics=False, simulators=False, nodes=1,
                adapter_settings={"scrape-interval": "1s", "scrape-timeout": "500ms"})
    procs_note.append(c)
    c.start()
    create_kwok_fleet(c, 10, c.workdir, "llm")
    c.wait_for(lambda: len(c.api.get(PATH)["items"]) >= 10, "10 pods listed", timeout=120)
    p = c.pki
    endpoint = Endpoint(c.ports["adapter"], {"ca": p.adapter_ca.cert,
                                             "cert": p.front_proxy_client.cert,
                                             "key": p.front_proxy_client.key,
                                             "name": ADAPTER_SERVICE_DNS})
    return endpoint, c, c.adapter.pid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter-bin", default=str(REPO / "target/release/adapter"))
    ap.add_argument("--sim-bin", default=str(REPO / "target/release/vllm-sim"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("--tls", action="store_true",
                    help="serve mode over TLS on the e2e harness' control plane")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds 10k sockets
    procs: list = []
    try:
        if args.tls:
            endpoint, cluster, _ = start_tls_plane(args, procs)

            def adapter_alive() -> bool:
                return cluster.adapter.alive()
        else:
            endpoint, adapter = start_standalone(args, procs)

            def adapter_alive() -> bool:
                return adapter.poll() is None
        rows = run_attacks(endpoint, args, adapter_alive)
        print(f"| attack ({'TLS, serve mode' if args.tls else 'plain HTTP, standalone'}) "
              "| what the attacker got | normal client during it |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    finally:
        for p in reversed(procs):
            if isinstance(p, subprocess.Popen):
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            else:
                p.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_standalone(args, procs: list) -> tuple[Endpoint, subprocess.Popen]:
    """One ``vllm-sim serve`` and the adapter in standalone mode (plain HTTP) scraping it."""
    sim_port, api_port = free_port(), free_port()
    procs.append(subprocess.Popen([args.sim_bin, "serve", "--host", "127.0.0.1", "--port",
                                   str(sim_port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    wait_http(sim_port, "/health")
    nofile = args.nofile
    adapter = subprocess.Popen(
        [args.adapter_bin, "serve", "--standalone", f"--insecure-listen=127.0.0.1:{api_port}",
         f"--target=llm/vllm-a=http://127.0.0.1:{sim_port}/metrics",
         "--scrape-interval=1s", "--scrape-timeout=500ms"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ,
                                                                   RUST_LOG="warn"))
    procs.append(adapter)
    wait_http(api_port, PATH)
    return Endpoint(api_port), adapter


def run_attacks(e: Endpoint, args, adapter_alive) -> list[tuple[str, str, str]]:
    big = b"a" * (1 << 20)
    selector = "app in (" + ",".join(f"v{i}" for i in range(15000)) + ")"
    nofile = args.nofile
    silent = ("10,000 connections that never start the TLS handshake (adapter fd limit %d)"
              if e.tls else "10,000 silent connections (adapter fd limit %d)") % nofile
    attacks = {
        "none (baseline)": None,
        "slowloris, 500 connections trickling a header byte a second":
            lambda stop, o: held_connections(e, 500, stop, o, how="trickle"),
        silent: lambda stop, o: held_connections(e, 10000, stop, o, how="silent"),
        "1 MiB URL, 4 clients in a loop":
            lambda stop, o: repeat(e, b"GET /" + big + b" HTTP/1.1\r\nHost: x\r\n\r\n", stop, o),
        "1 MiB header, 4 clients in a loop":
            lambda stop, o: repeat(e, b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: x"
                                   b"\r\nX-Big: " + big + b"\r\n\r\n", stop, o),
        "malformed percent-encoding (?labelSelector=%ZZ%C3%28), 4 clients":
            lambda stop, o: repeat(e, f"GET {PATH}?labelSelector=%ZZ%C3%28 HTTP/1.1\r\n"
                                   "Host: x\r\nConnection: close\r\n\r\n".encode(), stop, o),
        "100 KB label selector, 4 clients":
            lambda stop, o: repeat(e, f"GET {PATH}?labelSelector={selector} HTTP/1.1\r\n"
                                   "Host: x\r\nConnection: close\r\n\r\n".encode(), stop, o),
    }
    if e.tls:
        hpa = "".join(f"{k}: {v}\r\n" for k, v in HPA_HEADERS.items())
        attacks.update({
            "malformed percent-encoding, authenticated (front-proxy certificate), 4 clients":
                lambda stop, o: repeat(e, f"GET {PATH}?labelSelector=%ZZ%C3%28 HTTP/1.1\r\n"
                                       f"Host: x\r\n{hpa}Connection: close\r\n\r\n".encode(),
                                       stop, o, authenticated=True),
            "500 connections sending half a ClientHello, then nothing":
                lambda stop, o: held_connections(e, 500, stop, o, how="half-hello"),
            "TLS handshake flood (handshake, close), 4 clients":
                lambda stop, o: handshake_flood(e, stop, o),
            "HTTP/2 rapid reset over TLS (ALPN h2, 100 streams opened and reset per "
            "connection), 4 clients":
                lambda stop, o: h2_rapid_reset(e, stop, o),
        })
    else:
        attacks["HTTP/2 prior knowledge (h2c preface + SETTINGS), 4 clients"] = \
            lambda stop, o: repeat(e, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                   b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", stop, o)
    rows = []
    for name, attack in attacks.items():
        stop = threading.Event()
        client = NormalClient(e, stop)
        outcomes: dict = {}
        workers = []
        if attack is not None:
            n = 4 if "clients" in name and "connections" not in name else 1
            workers = [threading.Thread(target=attack, args=(stop, outcomes), daemon=True)
                       for _ in range(n)]
            for w in workers:
                w.start()
            time.sleep(0.5)  # let the attack build up before measuring
        client.start()
        time.sleep(args.seconds)
        stop.set()
        client.join(10)
        for w in workers:
            w.join(15)
        alive = adapter_alive()
        rows.append((name, ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(),
                                                                       key=str)) or "-",
                     client.summary() + ("" if alive else " — ADAPTER DIED")))
        if not alive:
            break
        time.sleep(1)
    return rows


if __name__ == "__main__":
    sys.exit(main())
