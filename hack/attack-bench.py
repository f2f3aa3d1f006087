#!/usr/bin/env python3
"""Hostile HTTP clients against the adapter, with a normal client's latency measured during
each attack (issue 8 item 7). A bench, not a test: it prints a table and asserts nothing.

Starts, on loopback only: one ``vllm-sim serve`` and the adapter in standalone mode (plain
HTTP, default connection limits) scraping it, with the adapter's file-descriptor limit set to
``--nofile`` (default 1024, so 10,000 connections exceed it). Then, for each attack in turn,
``--seconds`` long (bounded loops that stop by themselves): a normal client sends one metric
request after another on a keep-alive connection (reconnecting when closed) and records each
latency; the attacker runs beside it. Prints, per attack: what the attacker got, and the normal
client's request count, errors, p50 and p99.

Usage: hack/attack-bench.py [--adapter-bin target/release/adapter] [--sim-bin ...]
       [--seconds 8] [--nofile 1024]
Not measured here: TLS (standalone serves plain HTTP only).
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATH = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_num_requests_waiting"


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
    def __init__(self, port: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.stop_event = port, stop
        self.latencies: list[float] = []
        self.errors = 0
        self.last_error = ""

    def run(self) -> None:
        conn = None
        while not self.stop_event.is_set():
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", PATH)
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


def raw_request(port: int, data: bytes, timeout: float = 5) -> str:
    """Sends ``data``; returns the status line (or what happened)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            buf = s.recv(4096)
            if not buf:
                return "closed"
            if not buf.startswith(b"HTTP/"):
                return "HTTP/2 frames (h2c answered)"
            return buf.split(b"\r\n", 1)[0].decode(errors="replace")[:40]
    except OSError as e:
        return type(e).__name__


def repeat(port: int, data: bytes, stop: threading.Event, outcomes: dict) -> None:
    while not stop.is_set():
        o = raw_request(port, data)
        outcomes[o] = outcomes.get(o, 0) + 1


def held_connections(port: int, count: int, stop: threading.Event, outcomes: dict,
                     trickle: bool) -> None:
    """Opens ``count`` connections that send nothing (or trickle a header byte a second) and
    records how each ended."""
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.setblocking(False)
            if trickle:
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError as e:
            outcomes[f"connect {type(e).__name__}"] = outcomes.get(
                f"connect {type(e).__name__}", 0) + 1
    outcomes["opened"] = len(socks)
    start = time.monotonic()
    closed_after: list[float] = []
    while not stop.is_set() and socks:
        for s in list(socks):
            try:
                if trickle:
                    s.send(b"X")
                if s.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                closed_after.append(time.monotonic() - start)
                socks.remove(s)
                s.close()
        stop.wait(1.0)
    outcomes["closed by the adapter"] = len(closed_after)
    if closed_after:
        outcomes["closed after (median s)"] = round(statistics.median(closed_after), 1)
    for s in socks:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter-bin", default=str(REPO / "target/release/adapter"))
    ap.add_argument("--sim-bin", default=str(REPO / "target/release/vllm-sim"))
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--nofile", type=int, default=1024)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds 10k sockets
    sim_port, api_port = free_port(), free_port()
    procs = [subprocess.Popen([args.sim_bin, "serve", "--host", "127.0.0.1", "--port",
                               str(sim_port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        wait_http(sim_port, "/health")
        nofile = args.nofile
        procs.append(subprocess.Popen(
            [args.adapter_bin, "serve", "--standalone", f"--insecure-listen=127.0.0.1:{api_port}",
             f"--target=llm/vllm-a=http://127.0.0.1:{sim_port}/metrics",
             "--scrape-interval=1s", "--scrape-timeout=500ms"],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ,
                                                                       RUST_LOG="warn")))
        wait_http(api_port, PATH)
        big = b"a" * (1 << 20)
        selector = "app in (" + ",".join(f"v{i}" for i in range(15000)) + ")"
        attacks = {
            "none (baseline)": None,
            "slowloris, 500 connections trickling a header byte a second":
                lambda stop, o: held_connections(api_port, 500, stop, o, trickle=True),
            "10,000 silent connections (adapter fd limit %d)" % nofile:
                lambda stop, o: held_connections(api_port, 10000, stop, o, trickle=False),
            "1 MiB URL, 4 clients in a loop":
                lambda stop, o: repeat(api_port, b"GET /" + big + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                                       stop, o),
            "1 MiB header, 4 clients in a loop":
                lambda stop, o: repeat(api_port, b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: x"
                                       b"\r\nX-Big: " + big + b"\r\n\r\n", stop, o),
            "malformed percent-encoding (?labelSelector=%ZZ%C3%28), 4 clients":
                lambda stop, o: repeat(api_port, f"GET {PATH}?labelSelector=%ZZ%C3%28 HTTP/1.1\r\n"
                                       "Host: x\r\nConnection: close\r\n\r\n".encode(), stop, o),
            "100 KB label selector, 4 clients":
                lambda stop, o: repeat(api_port, f"GET {PATH}?labelSelector={selector} HTTP/1.1\r\n"
                                       "Host: x\r\nConnection: close\r\n\r\n".encode(), stop, o),
            "HTTP/2 prior knowledge (h2c preface + SETTINGS), 4 clients":
                lambda stop, o: repeat(api_port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                       b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", stop, o),
        }
        rows = []
        for name, attack in attacks.items():
            stop = threading.Event()
            client = NormalClient(api_port, stop)
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
            alive = procs[1].poll() is None
            rows.append((name, ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(),
                                                                           key=str)) or "-",
                         client.summary() + ("" if alive else " — ADAPTER DIED")))
            if not alive:
                break
            time.sleep(1)
        print("| attack | what the attacker got | normal client during it |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    sys.exit(main())
