"""Load for the simulated fleet: real requests, and synthetic gauges through the admin API.

Owns: a closed-loop client pool that sends ``POST /v1/completions`` to a Deployment's Ready
pods round-robin (as a Service would), with a concurrency that can be changed while it runs
and a hard stop; and helpers that set or clear a simulator's synthetic load or kill its
``/metrics`` endpoint. Does not own: which pods exist (it asks the cluster every half second).

Closed loop on purpose: with C clients over R replicas of ``max_num_seqs`` S, each replica
holds about C/R requests, so its queue is about C/R - S: the queue shrinks as the HPA adds
replicas and the fleet settles instead of oscillating (an open-loop rate above capacity would
grow the queue without bound, one below it would empty it).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import deque
from typing import Callable

# A request may take this long before the client gives up (queues in the tests stay under a
# few seconds; a stuck simulator must not hang a test).
REQUEST_TIMEOUT_SECONDS = 30.0
TARGET_REFRESH_SECONDS = 0.5


def post_json(addr: str, path: str, body: dict, timeout: float = 5.0) -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_text(addr: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def set_synthetic_load(addr: str, waiting: float = 0, running: float = 0,
                       ttft_seconds: float | None = None,
                       observations_per_second: float = 0) -> None:
    body: dict = {"waiting": waiting, "running": running}
    if ttft_seconds is not None:
        body["ttft_seconds"] = ttft_seconds
        body["observations_per_second"] = observations_per_second
    status, data = post_json(addr, "/admin/load", body)
    if status // 100 != 2:
        raise RuntimeError(f"POST {addr}/admin/load {body}: HTTP {status} {data[:200]!r}")


def metrics_down(addr: str) -> None:
    status, data = post_json(addr, "/admin/metrics-down", {})
    if status // 100 != 2:
        raise RuntimeError(f"POST {addr}/admin/metrics-down: HTTP {status} {data[:200]!r}")


def metrics_up(addr: str) -> None:
    status, data = post_json(addr, "/admin/metrics-up", {})
    if status // 100 != 2:
        raise RuntimeError(f"POST {addr}/admin/metrics-up: HTTP {status} {data[:200]!r}")


class ClosedLoopLoad:
    """``concurrency`` clients, each sending its next request when the last one is answered.

    ``targets`` returns the current ``ip:port`` list (Ready pods). ``spread="pinned"`` keeps
    client i on replica i mod R, like a keep-alive connection through a Service: C clients
    over R replicas hold exactly floor/ceil(C/R) requests each. ``"round-robin"`` sends each
    request to the next replica, so even one client reaches every replica (needed when every
    replica must see traffic, e.g. for a latency percentile); with many clients its per-replica
    counts wander, having nothing that pulls them back to even.
    """

    def __init__(self, targets: Callable[[], list[str]], model: str, concurrency: int = 0,
                 prompt: str = "Say something about autoscaling.", max_tokens: int = 20,
                 max_duration: float = 600.0, name: str = "load", spread: str = "pinned"):
        if spread not in ("pinned", "round-robin"):
            raise ValueError(spread)
        self.spread = spread
        self._targets_fn = targets
        self.model, self.prompt, self.max_tokens = model, prompt, max_tokens
        self.name = name
        self._concurrency = concurrency
        self._deadline = time.monotonic() + max_duration
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._targets: list[str] = []
        self._rr = 0
        self._workers: list[threading.Thread] = []
        self.completed = 0
        self.errors = 0          # every failed request
        self.http_errors = 0     # answered, but not 200: the simulator refused or failed it
        self.last_error = ""
        self.finished_at: deque[float] = deque(maxlen=100_000)
        self._refresher = threading.Thread(target=self._refresh_loop, name=f"{name}-targets",
                                           daemon=True)

    def __enter__(self) -> "ClosedLoopLoad":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._refresh()
        self._refresher.start()
        self.set_concurrency(self._concurrency)

    def _refresh(self) -> None:
        try:
            targets = self._targets_fn()
        except Exception as e:  # keep the old list; the API may blip
            self.last_error = f"targets: {e}"
            return
        with self._lock:
            self._targets = list(targets)

    def _refresh_loop(self) -> None:
        while not self._halt.wait(TARGET_REFRESH_SECONDS):
            self._refresh()

    def set_concurrency(self, n: int) -> None:
        with self._lock:
            self._concurrency = n
            alive = [w for w in self._workers if w.is_alive()]
            self._workers = alive
            for i in range(len(alive), n):
                w = threading.Thread(target=self._work, args=(i,), name=f"{self.name}-{i}",
                                     daemon=True)
                self._workers.append(w)
                w.start()

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def _next_target(self, index: int) -> str | None:
        with self._lock:
            if not self._targets:
                return None
            if self.spread == "pinned":
                return self._targets[index % len(self._targets)]
            self._rr = (self._rr + 1) % len(self._targets)
            return self._targets[self._rr]

    def _work(self, index: int) -> None:
        while not self._halt.is_set() and time.monotonic() < self._deadline:
            if index >= self._concurrency:
                return
            addr = self._next_target(index)
            if addr is None:
                self._halt.wait(0.2)
                continue
            try:
                status, data = post_json(addr, "/v1/completions", {
                    "model": self.model, "prompt": self.prompt,
                    "max_tokens": self.max_tokens}, timeout=REQUEST_TIMEOUT_SECONDS)
                if status == 200:
                    with self._lock:
                        self.completed += 1
                        self.finished_at.append(time.monotonic())
                else:
                    with self._lock:
                        self.http_errors += 1
                    self._error(f"{addr}: HTTP {status} {data[:120]!r}")
            except OSError as e:
                # A pod scaled away mid-request: like a Service endpoint vanishing.
                self._error(f"{addr}: {e}")

    def _error(self, msg: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = msg
        self._halt.wait(0.1)

    def rate(self, seconds: float) -> float:
        """Completed requests per second over the last ``seconds``."""
        now = time.monotonic()
        with self._lock:
            n = sum(1 for t in self.finished_at if t >= now - seconds)
        return n / seconds

    def stop(self) -> None:
        self._halt.set()
        for w in list(self._workers):
            w.join(timeout=REQUEST_TIMEOUT_SECONDS + 1)
        if self._refresher.is_alive():
            self._refresher.join(timeout=2)
