"""The container images `make image` builds (target/image/*.oci.tar, from the Dockerfile): what
they contain and how they run.

Inspected from the OCI archive itself (index -> manifest -> config and layers): the user is
65532:65532, the entrypoint the binary, the layers (one per COPY) hold the static binary and
the licence and nothing else (no shell, no libc), the binary has no ELF interpreter (static). Then each
image is run with Debian's podman, read-only, without network or capabilities, as a Kubernetes
pod with deploy/'s securityContext would run it. The OCI runtime is runc: crun 1.8 (Debian 12)
refuses to start any container on a host whose cgroup v2 hierarchy holds a controller while
v1 is mounted too ("cgroups in hybrid mode not supported"), as this kind of VM does.

Where the images could not be built (no buildah, no user namespaces) or podman cannot run
containers, the tests fail, saying why -- unless INFERSCALE_ALLOW_SKIP=1 (the repository's one
skip convention) says skipping is intended: then they are reported as skipped (`SKIPPED: ...`,
listed under pytest -rs), never as passes. With an archive but no podman, the inspection
still runs.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "target/image"
IMAGES = {"adapter": "/adapter", "scaler": "/scaler"}


def crate_version() -> str:
    return re.search(r'^version = "(.+)"$', (REPO / "adapter/Cargo.toml").read_text(),
                     re.M).group(1)


def skip_or_fail(reason: str) -> None:
    """The repository's visible-skip convention: fail unless INFERSCALE_ALLOW_SKIP=1."""
    if os.environ.get("INFERSCALE_ALLOW_SKIP") == "1":
        pytest.skip(f"SKIPPED: {reason} (INFERSCALE_ALLOW_SKIP=1)")
    pytest.fail(f"{reason} (set INFERSCALE_ALLOW_SKIP=1 to skip)")


def archive(name: str) -> Path:
    path = OUT / f"{name}-{crate_version()}.oci.tar"
    if not path.exists():
        skip_or_fail(f"{path} is missing: `make image` (hack/image.sh) did not build it here")
    return path


def blob(tar: tarfile.TarFile, digest: str) -> bytes:
    algo, hexdigest = digest.split(":")
    return tar.extractfile(f"blobs/{algo}/{hexdigest}").read()


def image_parts(path: Path) -> tuple[dict, dict, list[tarfile.TarInfo], dict[str, bytes]]:
    """(manifest, config, entries of every layer, file contents by path)."""
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())
        (desc,) = index["manifests"]
        manifest = json.loads(blob(tar, desc["digest"]))
        config = json.loads(blob(tar, manifest["config"]["digest"]))
        entries, files = [], {}
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(tar, layer["digest"]))) as lt:
                for e in lt.getmembers():
                    entries.append(e)
                    if e.isfile():
                        files[e.name.lstrip("./")] = lt.extractfile(e).read()
    return manifest, config, entries, files


def elf_has_interpreter(data: bytes) -> bool:
    """True if the ELF64 binary names a dynamic loader (PT_INTERP): a dynamically linked one."""
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return True
    return False


@pytest.mark.parametrize("name", IMAGES)
def test_image_contents(name):
    manifest, config, entries, files = image_parts(archive(name))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    c = config["config"]
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == [IMAGES[name]]
    assert not c.get("Cmd"), "no default command: arguments are the binary's"
    labels = c["Labels"]
    assert labels["org.opencontainers.image.version"] == crate_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # FROM scratch: a layer with the licence and one with the binary, nothing else.
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"])
    paths = {e.name.lstrip("./").rstrip("/") for e in entries} - {""}
    assert paths == {name, "licenses", "licenses/LICENSE"}, paths
    for shell in ("bin/sh", "bin/bash", "bin/busybox"):
        assert shell not in paths
    binary = [e for e in entries if e.name.lstrip("./") == name][0]
    assert binary.mode & 0o111 and binary.uid == 0 and binary.gid == 0, \
        "root-owned and not writable by the user the container runs as"
    assert not binary.mode & 0o022
    assert not elf_has_interpreter(files[name]), "statically linked (no ELF interpreter)"
    assert files["licenses/LICENSE"] == (REPO / "LICENSE").read_bytes()


def podman() -> list[str]:
    exe = shutil.which("podman")
    if not exe:
        skip_or_fail("podman is not installed (hack/image.sh installs it from Debian): the "
                     "images are inspected but not run")
    # A private store under target/, never the host's.
    argv = [exe, "--root", str(OUT / "podman"), "--runroot", str(OUT / "podman-run"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend",
            "none", "--runtime", "runc"]
    problem = podman_problem(tuple(argv))
    if problem:
        skip_or_fail(f"podman cannot run containers on this machine: {problem}")
    return argv


@functools.cache
def podman_problem(argv: tuple[str, ...]) -> str | None:
    """Why podman cannot work here (its own `info` fails: no user namespaces, no runtime), or
    None. An image that fails to run is a test failure, not this."""
    r = subprocess.run([*argv, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                       capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


# As a restricted pod runs: read-only root, no capabilities, no privilege gain, no network
# (the binaries need none to start). Limits within the test machine's own hard limits
# (podman's default of 1048576 open files is above them).
RUN_FLAGS = ["--read-only", "--network", "none", "--cap-drop", "ALL", "--security-opt",
             "no-new-privileges", "--pull", "never", "--ulimit", "nofile=1024:4096",
             "--ulimit", "nproc=1024:4096"]


def run_image(name: str, args: list[str], entrypoint: str | None = None,
              detach_as: str | None = None) -> subprocess.CompletedProcess:
    argv = [*podman(), "run", *RUN_FLAGS]
    argv += ["-d", "--name", detach_as] if detach_as else ["--rm"]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    argv += [f"oci-archive:{archive(name)}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_read_only_as_non_root(name):
    r = run_image(name, ["--version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{name} {crate_version()}", r.stdout


def test_image_has_no_shell():
    r = run_image("adapter", ["-c", "id"], entrypoint="/bin/sh")
    assert r.returncode != 0
    assert "no such file" in (r.stderr + r.stdout).lower(), r.stderr


def test_adapter_serves_as_65532_on_a_read_only_root():
    """The adapter keeps running (it writes no file) and its process is 65532:65532."""
    name = f"inferscale-image-test-{os.getpid()}"
    r = run_image("adapter", ["serve", "--standalone", "--target",
                              "llm/vllm-0=http://127.0.0.1:8000/metrics"], detach_as=name)
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 30
        logs = ""
        while "serving plain HTTP" not in logs and time.monotonic() < deadline:
            time.sleep(0.5)
            out = subprocess.run([*podman(), "logs", name], capture_output=True, text=True)
            logs = out.stdout + out.stderr
        assert "serving plain HTTP" in logs, logs
        top = subprocess.run([*podman(), "top", name, "user", "group", "args"],
                             capture_output=True, text=True)
        assert top.returncode == 0, top.stderr
        rows = [line.split(None, 2) for line in top.stdout.splitlines()[1:]]
        assert rows and all(r[0] == "65532" and r[1] == "65532" for r in rows), top.stdout
        assert rows[0][2].startswith("/adapter serve"), top.stdout
        state = subprocess.run([*podman(), "inspect", "--format", "{{.State.Status}}", name],
                               capture_output=True, text=True).stdout.strip()
        assert state == "running", state
    finally:
        subprocess.run([*podman(), "rm", "-f", "-t", "2", name], capture_output=True)
