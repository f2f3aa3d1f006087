"""End-to-end: what a platform team installs is accepted by a real kube-apiserver.

- Every value combination of the Helm chart (tests/deploy/test_chart.py's list: each TLS mode x
  external metrics x monitoring on/off, and a tuned one) and the kustomize overlays (the
  cert-manager overlay with every component, and the overlay gen-certs.sh writes) are applied
  with server-side dry-run: the apiserver validates every field against its OpenAPI schema
  (--validate=strict), the CRDs' schemas (prometheus-operator and cert-manager CRDs, from
  their Go modules at the versions hack/versions.env pins) and admission, and stores nothing.
- Helm's self-signed mode reuses the serving Secret already in the cluster (what an upgrade
  sees): rendered against the live apiserver (`helm template --dry-run=server`, so `lookup`
  runs), the Secret and every APIService's caBundle are the ones in the cluster, not new ones.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from .cluster import REPO, Cluster

# The chart's value combinations are defined once, with the offline chart tests.
import sys
sys.path.insert(0, str(REPO / "tests"))
from deploy.test_chart import COMBINATIONS, kustomize_with_components  # noqa: E402

CHART = REPO / "deploy/helm/inferscale"
# The harness runs its own adapter objects in inferscale-system (a Service of the
# same name, for one): a dry-run apply there would be merged into them. The dry runs use a
# namespace of their own; cluster-scoped objects (APIServices, ClusterRoles) are merged into
# the harness's in dry-run only, which stores nothing.
DRY_RUN_NS = "inferscale-dryrun"


def to_dry_run_namespace(objs: list[dict]) -> list[dict]:
    """kustomize output moved from inferscale-system to DRY_RUN_NS (the kustomize files name
    their namespace themselves; a kustomize `namespace:` would also move kube-system's
    RoleBinding)."""
    text = yaml.safe_dump_all(objs)
    return [d for d in yaml.safe_load_all(text.replace("inferscale-system", DRY_RUN_NS)) if d]


def versions() -> dict[str, str]:
    text = (REPO / "hack/versions.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.M))


def module_dir(module: str, version: str) -> Path:
    """The module's source tree from the Go module proxy (cached in GOMODCACHE)."""
    r = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                       capture_output=True, text=True, cwd=tempfile.gettempdir())
    doc = json.loads(r.stdout or "{}")
    if r.returncode != 0 or "Dir" not in doc:
        pytest.fail(f"go mod download {module}@{version}: {doc.get('Error', r.stderr)}")
    return Path(doc["Dir"])


def helm() -> str:
    subprocess.run(["bash", str(REPO / "hack/build-binaries.sh"), "helm"], check=True,
                   capture_output=True)
    return subprocess.run(["bash", str(REPO / "hack/bin-path.sh"), "helm"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """prometheus-operator's and cert-manager's CRDs, installed for real (CRDs only: no
    controller runs, nothing acts on the objects)."""
    v = versions()
    po = module_dir("github.com/prometheus-operator/prometheus-operator",
                    v["PROMETHEUS_OPERATOR_VERSION"]) / "example/prometheus-operator-crd"
    cm = module_dir("github.com/cert-manager/cert-manager", v["CERT_MANAGER_VERSION"]) / "deploy/crds"
    files = [po / f"monitoring.coreos.com_{k}.yaml" for k in
             ("servicemonitors", "podmonitors", "prometheusrules")]
    files += [cm / f"cert-manager.io_{k}.yaml" for k in ("issuers", "certificates")]
    for f in files:
        cluster.kubectl("apply", "--server-side", "--field-manager=inferscale-e2e", "-f", str(f))
    for f in files:
        name = yaml.safe_load(f.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    cluster.create_namespace("monitoring")
    cluster.create_namespace(DRY_RUN_NS)
    return cluster


def dry_run(c: Cluster, manifest: str, what: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(manifest)
        f.flush()
        r = c.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                      "--field-manager=inferscale-e2e-dry-run", "--validate=strict", "-f",
                      f.name, check=False)
    assert r.returncode == 0, f"{what}: the apiserver refused:\n{r.stderr}"
    applied = [line for line in r.stdout.splitlines() if "(server dry run)" in line]
    count = len([d for d in yaml.safe_load_all(manifest) if d])
    assert len(applied) == count, f"{what}: {len(applied)} of {count} objects:\n{r.stdout}"


@pytest.mark.parametrize("name,values", COMBINATIONS, ids=[n for n, _ in COMBINATIONS])
def test_chart_combination_is_accepted_by_the_apiserver(crds, name, values, tmp_path):
    c = crds
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    r = subprocess.run([helm(), "template", "inferscale", str(CHART), "--namespace",
                        DRY_RUN_NS, "--values", str(vf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dry_run(c, r.stdout, f"chart {name}")


def test_kustomize_overlays_are_accepted_by_the_apiserver(crds, tmp_path):
    c = crds
    objs = to_dry_run_namespace(
        kustomize_with_components(["external-metrics", "prometheus", "grafana-dashboards"]))
    dry_run(c, yaml.safe_dump_all(objs), "overlays/cert-manager with every component")
    out = tmp_path / "generated"
    subprocess.run(["bash", str(REPO / "deploy/gen-certs.sh"), "--out", str(out),
                    "--namespace", DRY_RUN_NS, "--external-metrics"], check=True,
                   capture_output=True)
    generated = c.kubectl("kustomize", str(out)).stdout
    dry_run(c, generated, "the overlay gen-certs.sh writes")


def test_helm_mode_reuses_the_serving_secret_on_upgrade(crds):
    """`lookup` finds the Secret an earlier install made: the upgrade keeps it and caBundle."""
    c = crds
    ns = "helm-reuse"
    c.create_namespace(ns)
    # Rendered offline (no cluster): a fresh CA and certificate each time.
    argv = [helm(), "template", "inferscale", str(CHART), "--namespace", ns]
    first = [d for d in yaml.safe_load_all(subprocess.run(argv, capture_output=True, text=True,
                                                          check=True).stdout) if d]
    secret = [d for d in first if d["kind"] == "Secret"][0]
    again = [d for d in yaml.safe_load_all(subprocess.run(argv, capture_output=True, text=True,
                                                          check=True).stdout) if d]
    assert [d for d in again if d["kind"] == "Secret"][0]["data"] != secret["data"]
    # Install the first render's Secret, as `helm install` would have.
    c.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(secret))
    upgrade = subprocess.run([*argv, "--dry-run=server",
                              f"--kubeconfig={c.kubeconfigs['admin']}"],
                             capture_output=True, text=True)
    assert upgrade.returncode == 0, upgrade.stderr
    objs = [d for d in yaml.safe_load_all(upgrade.stdout) if d]
    kept = [d for d in objs if d["kind"] == "Secret"][0]
    assert kept["data"] == secret["data"], "the serving Secret is reused, not regenerated"
    ca = secret["data"]["ca.crt"]
    bundles = {d["metadata"]["name"]: d["spec"]["caBundle"] for d in objs
               if d["kind"] == "APIService"}
    assert bundles and set(bundles.values()) == {ca}, bundles
    # The pods' checksum annotation is unchanged too, so an upgrade does not roll them.
    def checksum(docs):
        dep = [d for d in docs if d["kind"] == "Deployment"][0]
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/serving-cert"]
    assert checksum(objs) == checksum(first)
    c.kubectl("delete", "-n", ns, "secret", secret["metadata"]["name"])
