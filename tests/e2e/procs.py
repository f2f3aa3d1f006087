"""Every process the end-to-end harness starts, and the guarantee that none outlives it.

Owns: starting processes (each in its own session, output to a log file), stopping them
(SIGTERM to the process group, SIGKILL after a grace period), stopping all of them from a
finalizer, an ``atexit`` hook and SIGTERM/SIGHUP/SIGINT handlers, and finding leftovers: each
process gets ``INFERSCALE_E2E_RUN=<run id>`` in its environment, so a scan of ``/proc`` finds
even grandchildren. Processes are also started under ``setpriv --pdeathsig KILL`` when
available, so they die with the thread that started them if the harness is SIGKILLed.
Does not own: what the processes are (``cluster.py``) or when they are started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# A component gets this long to exit after SIGTERM before SIGKILL: etcd and kube-apiserver
# need a moment to close their listeners; nothing of ours needs more.
STOP_GRACE_SECONDS = 5.0
ENV_MARKER = "INFERSCALE_E2E_RUN"


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tail(path: Path, lines: int = 50) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text[-lines:])


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        return tail(self.log_path, lines)


class ProcessGroup:
    """The processes of one harness run."""

    def __init__(self, run_id: str, log_dir: Path):
        self.run_id = run_id
        self.log_dir = log_dir
        self._procs: list[Proc] = []
        self._lock = threading.Lock()
        self._closed = False
        self._setpriv = shutil.which("setpriv")
        atexit.register(self.stop_all)
        self._install_signal_handlers()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            log(f"signal {signum}: stopping every process of the run")
            self.stop_all()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os._exit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, handler)

    def start(self, name: str, argv: list[str], env: dict | None = None,
              log_name: str | None = None) -> Proc:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"not starting {name}: the run is being torn down")
            log_path = self.log_dir / f"{log_name or name}.log"
            full_env = dict(os.environ if env is None else env)
            full_env[ENV_MARKER] = self.run_id
            real_argv = list(argv)
            if self._setpriv:
                real_argv = [self._setpriv, "--pdeathsig", "KILL", "--"] + real_argv
            out = open(log_path, "ab", buffering=0)
            try:
                popen = subprocess.Popen(
                    real_argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=full_env, start_new_session=True, close_fds=True)
            finally:
                out.close()
            proc = Proc(name, list(argv), log_path, popen)
            self._procs.append(proc)
            return proc

    def stop(self, proc: Proc, grace: float = STOP_GRACE_SECONDS,
             sig: int = signal.SIGTERM) -> int | None:
        """Stops one process (its whole process group) and reaps it; returns its exit code."""
        if proc.alive():
            _signal_group(proc.pid, sig)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        # The group may hold children of the process that outlived it.
        _signal_group(proc.pid, signal.SIGKILL)
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)
        return proc.popen.returncode

    def stop_many(self, procs: list[Proc], grace: float = STOP_GRACE_SECONDS) -> None:
        """Stops several processes in one grace period: signal them all, then wait."""
        for p in procs:
            if p.alive():
                _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            _signal_group(p.pid, signal.SIGKILL)
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{p.name} (pid {p.pid}) did not die after SIGKILL")
        with self._lock:
            for p in procs:
                if p in self._procs:
                    self._procs.remove(p)

    def stop_all(self) -> None:
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        if procs:
            self.stop_many(procs)

    def running(self) -> list[Proc]:
        with self._lock:
            return [p for p in self._procs if p.alive()]

    def leftovers(self) -> list[str]:
        """Processes of this run still alive anywhere on the machine (by the env marker)."""
        return find_marked_processes(self.run_id)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def find_marked_processes(run_id: str) -> list[str]:
    marker = f"{ENV_MARKER}={run_id}".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            if marker not in env.split(b"\0"):
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie holds no port and no CPU; its parent reaps it
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        found.append(f"pid {entry}: {cmd.strip()}")
    return found
