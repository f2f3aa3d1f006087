"""Shared helpers of the install tests (chart, kustomize, alerts, dashboards, image).

Tools are the pinned, cached builds of hack/build-binaries.sh (helm, promtool, kubectl): a
warm cache answers in milliseconds, a cold one builds them (minutes, with progress lines).
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/inferscale"
RULES = REPO / "alerts/inferscale.rules.yaml"
RELEASE = "inferscale"
NAMESPACE = "inferscale-system"


@functools.cache
def tool(name: str) -> str:
    """Path of a cached binary, built first if needed."""
    r = subprocess.run(["bash", str(REPO / "hack/build-binaries.sh"), name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"hack/build-binaries.sh {name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    p = subprocess.run(["bash", str(REPO / "hack/bin-path.sh"), name],
                       capture_output=True, text=True, check=True)
    return p.stdout.strip()


def run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout[-3000:]}\n"
                             f"{r.stderr[-3000:]}")
    return r


def crate_version() -> str:
    text = (REPO / "adapter/Cargo.toml").read_text()
    return re.search(r'^version = "(.+)"$', text, re.M).group(1)


def helm_template(values: dict | None = None, sets: list[str] | None = None,
                  check: bool = True, extra: list[str] | None = None
                  ) -> subprocess.CompletedProcess:
    """`helm template` of the chart as release "inferscale" in inferscale-system, for the
    Kubernetes version the e2e control plane runs."""
    argv = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", kube_version()]
    for s in sets or []:
        argv += ["--set", s]
    if values:
        argv += ["--values", "-"]
    argv += extra or []
    return run(argv, check=check, input=yaml.safe_dump(values) if values else None)


def render(values: dict | None = None, sets: list[str] | None = None,
           extra: list[str] | None = None) -> list[dict]:
    return docs(helm_template(values, sets, extra=extra).stdout)


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.cache
def kube_version() -> str:
    env = (REPO / "hack/versions.env").read_text()
    return re.search(r"^KUBERNETES_VERSION=v(\S+)$", env, re.M).group(1)


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
