"""The Helm chart and the kustomize manifests: lint, every value combination rendered and
checked for the promises the chart makes, the chart against the kustomize base object by
object, versions pinned to the crate. (Applying every rendered combination to a real
kube-apiserver is tests/e2e/test_deploy.py.)"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import (CHART, NAMESPACE, REPO, by_kind, crate_version, docs, helm_template,
                       kube_version, one, render, run, tool)

# Value combinations: every TLS mode x external metrics x (monitoring on/off), KEDA's external
# scaler with and without a client CA, and the tuned knobs. Each one is linted, rendered and
# checked here, and applied with server-side dry-run in the e2e suite.
EXISTING_CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
MONITORING = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                "rbac": {"prometheusServiceAccount": {"name": "prometheus-k8s"}}},
    "fleetPodMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True, "annotations": {"grafana_folder": "inferscale"}},
}


def combinations() -> list[tuple[str, dict]]:
    out = []
    for mode, external, monitoring in itertools.product(
            ["helm", "cert-manager", "existing-secret"], [False, True], [False, True]):
        values: dict = {"tls": {"mode": mode}, "externalMetrics": {"enabled": external}}
        if mode == "existing-secret":
            values["tls"]["secretName"] = "my-adapter-cert"
            values["tls"]["existingSecret"] = {"caBundle": EXISTING_CA}
        if monitoring:
            values.update(copy.deepcopy(MONITORING))
        out.append((f"{mode}-external={external}-monitoring={monitoring}", values))
    # KEDA's external scaler: as the component renders it, and with a client CA (from a
    # Secret, and from a ConfigMap with KEDA elsewhere).
    out.append(("keda-scaler", {"kedaScaler": {"enabled": True}}))
    out.append(("keda-scaler-client-ca-secret", {"kedaScaler": {
        "enabled": True, "clientCA": {"secretName": "keda-client-ca"}}}))
    out.append(("keda-scaler-client-ca-configmap", {"kedaScaler": {
        "enabled": True, "port": 9444,
        "clientCA": {"configMapName": "keda-client-ca", "key": "keda-ca.pem"},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "autoscaling"}}}}))
    # The knobs a platform team turns, all at once.
    out.append(("tuned", {
        "adapter": {"replicas": 3, "priorityClassName": "system-cluster-critical",
                    "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                     "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In",
                             "values": ["amd64"]}]}]}}},
                    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"},
                                  "limits": {"memory": "1Gi"}},
                    "image": {"digest": "sha256:" + "a" * 64},
                    "extraArgs": ["--scrape-timeout=2s"],
                    "env": [{"name": "RUST_LOG", "value": "debug"}],
                    "podDisruptionBudget": {"minAvailable": 2},
                    "scrapeInterval": "10s", "window": "120s"},
        "networkPolicy": {"enabled": False},
        "prometheusRule": {"enabled": True, "ttftObjective": {"seconds": "1.0",
                                                              "target": "0.999"},
                           "disabled": ["InferscaleGPUsIdle"],
                           "additionalAlertLabels": {"team": "ml-platform"}},
    }))
    return out


COMBINATIONS = combinations()


def values_file(values: dict, tmp: Path) -> Path:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- generated files and versions -------------------------------------------------------------

def test_generated_copies_are_current():
    """dashboards/*.json from hack/gen-dashboards.py; the chart's and kustomize's copies of the
    dashboards and rules from hack/gen-deploy-files.py: none may drift from its source."""
    run(["python3", str(REPO / "hack/gen-dashboards.py"), "--check"])
    run(["python3", str(REPO / "hack/gen-deploy-files.py"), "--check"])


def test_versions_are_pinned_to_the_crate_version():
    version = crate_version()
    scaler = (REPO / "scaler/Cargo.toml").read_text()
    assert f'\nversion = "{version}"\n' in scaler, "adapter and scaler share one version"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == version and chart["appVersion"] == version, chart
    kustomization = yaml.safe_load((REPO / "deploy/base/kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ghcr.io/inferscale/adapter",
                                        "newTag": version}], kustomization["images"]
    assert f"## [{version}]" in (REPO / "CHANGELOG.md").read_text()
    for path in (REPO / "deploy").rglob("*.yaml"):
        text = path.read_text()
        assert ":latest" not in text and "newTag: latest" not in text, path


# --- lint and render ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,values", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_lint(name, values, tmp_path):
    run([tool("helm"), "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
         "--values", str(values_file(values, tmp_path))])


def ca_bundles(objs: list[dict]) -> dict[str, str | None]:
    out = {}
    for svc in by_kind(objs, "APIService"):
        spec = svc["spec"]
        assert "insecureSkipTLSVerify" not in spec, svc
        ca = spec.get("caBundle")
        out[svc["metadata"]["name"]] = base64.b64decode(ca).decode() if ca else None
    return out


@pytest.mark.parametrize("name,values", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_render(name, values):
    objs = render(values)
    mode = values.get("tls", {}).get("mode", "helm")
    external = values.get("externalMetrics", {}).get("enabled", False)
    version = crate_version()

    # APIServices: custom metrics always, external metrics only when asked; every one trusts
    # a CA (caBundle, or cert-manager's injection), none skips verification.
    bundles = ca_bundles(objs)
    expected = {"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}
    if external:
        expected.add("v1beta1.external.metrics.k8s.io")
    assert set(bundles) == expected
    for svc in by_kind(objs, "APIService"):
        assert svc["spec"]["service"] == {"name": "inferscale-adapter", "namespace": NAMESPACE,
                                          "port": 443}
        if mode == "cert-manager":
            assert svc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
                f"{NAMESPACE}/inferscale-adapter-serving-cert"
            assert bundles[svc["metadata"]["name"]] is None
        else:
            assert bundles[svc["metadata"]["name"]].startswith("-----BEGIN CERTIFICATE-----")
    if mode == "existing-secret":
        assert set(bundles.values()) == {EXISTING_CA}
        assert not [s for s in by_kind(objs, "Secret") if s["type"] == "kubernetes.io/tls"]
        assert not by_kind(objs, "Certificate")

    deployment = one(objs, "Deployment", "inferscale-adapter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert f"--external-metrics={str(external).lower()}" in container["args"]
    image = container["image"]
    assert image == f"ghcr.io/inferscale/adapter:{version}" or "@sha256:" in image, image
    secret_name = values.get("tls", {}).get("secretName", "inferscale-adapter-serving-cert")
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == secret_name

    monitoring = "metrics" in values
    assert bool(by_kind(objs, "ServiceMonitor")) == monitoring
    assert bool(by_kind(objs, "PodMonitor")) == monitoring
    assert bool(by_kind(objs, "PrometheusRule")) == (monitoring or name == "tuned")
    dashboards = [o for o in by_kind(objs, "ConfigMap")
                  if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == (3 if monitoring else 0)
    for cm in dashboards:
        (fname, text), = cm["data"].items()
        assert json.loads(text) == json.loads((REPO / "dashboards" / fname).read_text())
        assert cm["metadata"]["annotations"] == {"grafana_folder": "inferscale"}
    if monitoring:
        # Prometheus reaches the adapter over TLS verified against the same Secret's CA.
        sm = one(objs, "ServiceMonitor")
        endpoint = sm["spec"]["endpoints"][0]
        assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": secret_name, "key": "ca.crt"}
        assert endpoint["tlsConfig"]["serverName"] == f"inferscale-adapter.{NAMESPACE}.svc"
        assert sm["spec"]["jobLabel"] == "inferscale.dev/metrics-job"
        service = one(objs, "Service", "inferscale-adapter")
        assert service["metadata"]["labels"]["inferscale.dev/metrics-job"] == "inferscale-adapter"
        # The PodMonitor cannot send Prometheus' token file: it sends its own ServiceAccount's,
        # bound to the same ClusterRole.
        pm = [o for o in by_kind(objs, "PodMonitor") if o["metadata"]["name"] == "inferscale-adapter"][0]
        pm_endpoint = pm["spec"]["podMetricsEndpoints"][0]
        assert "bearerTokenFile" not in pm_endpoint
        assert pm_endpoint["authorization"]["credentials"] == {
            "name": "inferscale-adapter-metrics-scraper-token", "key": "token"}
        token = one(objs, "Secret", "inferscale-adapter-metrics-scraper-token")
        assert token["type"] == "kubernetes.io/service-account-token"
        scraper = one(objs, "ClusterRoleBinding", "inferscale-adapter-metrics-scraper")
        assert scraper["roleRef"]["name"] == "inferscale-adapter-metrics"
        assert pm_endpoint["tlsConfig"] == endpoint["tlsConfig"]
        binding = one(objs, "ClusterRoleBinding", "inferscale-adapter-metrics")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                        "namespace": "monitoring"}]
        role = one(objs, "ClusterRole", "inferscale-adapter-metrics")
        assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
        rule = one(objs, "PrometheusRule")
        rules_file = yaml.safe_load((REPO / "alerts/inferscale.rules.yaml").read_text())
        if not external:
            assert rule["spec"]["groups"] == rules_file["groups"]
        else:
            api_alert = [r for g in rule["spec"]["groups"] for r in g["rules"]
                         if r.get("alert") == "InferscaleMetricsAPIServiceUnavailable"][0]
            assert "v1beta1\\\\.external\\\\.metrics" in api_alert["expr"], api_alert["expr"]


def test_tuned_values_reach_the_objects():
    objs = render(dict(COMBINATIONS)["tuned"])
    pod = one(objs, "Deployment", "inferscale-adapter")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert pod["tolerations"][0]["operator"] == "Exists"
    assert "nodeAffinity" in pod["affinity"]
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/inferscale/adapter@sha256:" + "a" * 64
    assert c["resources"]["limits"] == {"memory": "1Gi"}
    assert "--scrape-interval=10s" in c["args"] and "--window=120s" in c["args"]
    assert c["args"][-1] == "--scrape-timeout=2s"
    assert c["env"] == [{"name": "RUST_LOG", "value": "debug"}]
    assert one(objs, "Deployment")["spec"]["replicas"] == 3
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert not by_kind(objs, "NetworkPolicy")
    # The TTFT objective moved to 99.9 % within 1 s, in expressions and words alike.
    rules = [r for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    text = "\n".join([r["expr"] for r in rules] +
                     [v for r in rules for v in r.get("annotations", {}).values()])
    assert 'le="2.5"' not in text and "(1 - 0.99)" not in text and "2.5 s" not in text
    assert text.count('le="1.0"') == 4 and "(1 - 0.999)" in text
    fast = [r for r in rules if r.get("alert") == "InferscaleTTFTBudgetBurnFast"][0]
    assert "more than 1.0 s" in fast["annotations"]["description"]
    assert "the objective allows 0.1 %" in fast["annotations"]["description"]
    assert fast["labels"] == {"severity": "critical", "team": "ml-platform"}
    assert not [r for r in rules if r.get("alert") == "InferscaleGPUsIdle"]
    assert [r for r in rules if "record" in r], "recording rules are kept"


def test_helm_mode_certificate_is_valid_for_the_service(tmp_path):
    """The generated serving certificate is signed by the caBundle's CA, for the Service's
    DNS names, and the Secret, the APIServices and the pods' checksum agree."""
    objs = render({"tls": {"mode": "helm"}})
    secret = one(objs, "Secret", "inferscale-adapter-serving-cert")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(ca_bundles(objs).values()) == {data["ca.crt"]}
    (tmp_path / "ca.crt").write_text(data["ca.crt"])
    (tmp_path / "tls.crt").write_text(data["tls.crt"])
    run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")])
    san = run(["openssl", "x509", "-noout", "-ext", "subjectAltName",
               "-in", str(tmp_path / "tls.crt")]).stdout
    assert f"DNS:inferscale-adapter.{NAMESPACE}.svc" in san
    assert f"DNS:inferscale-adapter.{NAMESPACE}.svc.cluster.local" in san
    key = run(["openssl", "pkey", "-pubout"], input=data["tls.key"]).stdout
    cert_key = run(["openssl", "x509", "-noout", "-pubkey",
                    "-in", str(tmp_path / "tls.crt")]).stdout
    assert key == cert_key, "tls.key belongs to tls.crt"


KEDA_COMBINATIONS = [c for c in COMBINATIONS if c[0].startswith("keda-scaler")]


@pytest.mark.parametrize("name,values", [("off", {})] + KEDA_COMBINATIONS,
                         ids=["off"] + [c[0] for c in KEDA_COMBINATIONS])
def test_keda_scaler(name, values):
    """kedaScaler.enabled adds the flag, the container and Service port keda-grpc and the
    NetworkPolicy rule for KEDA's namespace; a client CA is mounted read-only from its Secret
    or ConfigMap and named by --keda-client-ca-file. Off, none of it is there."""
    objs = render(values)
    keda = values.get("kedaScaler", {})
    enabled = keda.get("enabled", False)
    port = keda.get("port", 9443)
    ca = keda.get("clientCA", {})
    pod = one(objs, "Deployment", "inferscale-adapter")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    keda_args = [a for a in container["args"] if a.startswith("--keda-")]
    service_ports = one(objs, "Service", "inferscale-adapter")["spec"]["ports"]
    ingress = one(objs, "NetworkPolicy", "inferscale-adapter")["spec"]["ingress"]
    if not enabled:
        assert keda_args == []
        assert [p["name"] for p in container["ports"]] == ["https"]
        assert [p["name"] for p in service_ports] == ["https"]
        assert len(ingress) == 1 and [v["name"] for v in pod["volumes"]] == ["serving-cert"]
        return
    assert container["ports"][1] == {"name": "keda-grpc", "containerPort": port,
                                     "protocol": "TCP"}
    assert service_ports[1] == {"name": "keda-grpc", "port": port, "targetPort": "keda-grpc",
                                "protocol": "TCP"}
    selector = keda.get("namespaceSelector",
                        {"matchLabels": {"kubernetes.io/metadata.name": "keda"}})
    assert ingress[1] == {"from": [{"namespaceSelector": selector}],
                          "ports": [{"port": port, "protocol": "TCP"}]}
    if not ca:
        assert keda_args == [f"--keda-scaler-listen=:{port}"]
        assert [v["name"] for v in pod["volumes"]] == ["serving-cert"]
        return
    key = ca.get("key", "ca.crt")
    assert keda_args == [f"--keda-scaler-listen=:{port}",
                         f"--keda-client-ca-file=/var/run/keda-client-ca/{key}"]
    mount = [m for m in container["volumeMounts"] if m["name"] == "keda-client-ca"]
    assert mount == [{"name": "keda-client-ca", "mountPath": "/var/run/keda-client-ca",
                      "readOnly": True}]
    volume = [v for v in pod["volumes"] if v["name"] == "keda-client-ca"][0]
    if "secretName" in ca:
        assert volume["secret"] == {"secretName": ca["secretName"], "defaultMode": 0o440}
    else:
        assert volume["configMap"] == {"name": ca["configMapName"], "defaultMode": 0o440}


@pytest.mark.parametrize("sets,message", [
    (["kedaScaler.clientCA.secretName=a"], "kedaScaler.clientCA needs kedaScaler.enabled=true"),
    (["kedaScaler.enabled=true", "kedaScaler.clientCA.secretName=a",
      "kedaScaler.clientCA.configMapName=b"], "set secretName or configMapName, not both"),
    (["kedaScaler.enabled=true", "kedaScaler.port=6443"],
     "kedaScaler.port must differ from adapter.port"),
    (["tls.mode=existing-secret"], "needs tls.existingSecret.caBundle"),
    (["tls.mode=insecure"], "tls.mode must be helm, cert-manager or existing-secret"),
    (["adapter.image.tag=latest"], 'image tag "latest" is refused'),
])
def test_refuses_unsafe_values(sets, message):
    r = helm_template(sets=sets, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_warm_pool_switch():
    """With the controller's CRD in the chart, warmPool.enabled renders the controller;
    without it, rendering refuses with a message that says what is missing."""
    crd = CHART / "files/crds/warmpools.inferscale.dev.yaml"
    r = helm_template(sets=["warmPool.enabled=true", "warmPool.podMonitor.enabled=true"],
                      check=False)
    if not crd.exists():
        assert r.returncode != 0 and "this chart has no WarmPool CRD" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    objs = docs(r.stdout)
    one(objs, "CustomResourceDefinition", "warmpools.inferscale.dev")
    controller = one(objs, "Deployment", "inferscale-scaler")
    container = controller["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["run", "--metrics-addr=0.0.0.0:8080",
                                     "--lease-name=inferscale-warm-pool"]
    assert container["image"] == f"ghcr.io/inferscale/scaler:{crate_version()}"
    pc = one(objs, "PriorityClass")
    assert pc["value"] == -10 and pc["preemptionPolicy"] == "Never"
    adapter = one(objs, "Deployment", "inferscale-adapter")
    assert "--warm-pools=true" in adapter["spec"]["template"]["spec"]["containers"][0]["args"]
    reader = one(objs, "ClusterRole", "inferscale-adapter-warmpool-reader")
    assert reader["rules"] == [{"apiGroups": ["inferscale.dev"], "resources": ["warmpools"],
                                "verbs": ["get", "list", "watch"]}]
    binding = one(objs, "ClusterRoleBinding", "inferscale-adapter-warmpool-reader")
    assert binding["subjects"][0]["name"] == "inferscale-adapter"
    lease_role = one(objs, "Role", "inferscale-scaler-leader-election")
    assert lease_role["rules"][1]["resourceNames"] == ["inferscale-warm-pool"]
    assert one(objs, "PodMonitor", "inferscale-scaler")["spec"]["podMetricsEndpoints"][0][
        "port"] == "metrics"


# --- the chart against the kustomize manifests ---------------------------------------------------

# Labels only Helm sets (release bookkeeping), and the one object only kustomize makes (Helm
# leaves the release namespace to `--create-namespace`; deploy/README.md says how to label it).
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/version",
                    "app.kubernetes.io/component"}
KUSTOMIZE_ONLY = {("Namespace", "inferscale-system")}
EXTERNAL_REGEX = "|v1beta1\\\\.external\\\\.metrics\\\\.k8s\\\\.io"


def strip_helm_labels(node):
    """Removes HELM_ONLY_LABELS from every label map and label selector in an object (a
    Service's selector is a plain map)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            flat = isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
            if k in ("labels", "matchLabels") and isinstance(v, dict) or k == "selector" and flat:
                v = {lk: lv for lk, lv in v.items() if lk not in HELM_ONLY_LABELS}
            out[k] = strip_helm_labels(v)
        return out
    if isinstance(node, list):
        return [strip_helm_labels(v) for v in node]
    return node


def keyed(objs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): strip_helm_labels(o) for o in objs}


def kustomize_with_components(components: list[str]) -> list[dict]:
    """overlays/cert-manager with its commented `components:` block filled in, as the README
    tells users to do, built from a scratch overlay next to it."""
    overlay = REPO / "deploy/overlays/cert-manager"
    scratch = Path(tempfile.mkdtemp(prefix=".equivalence-", dir=REPO / "deploy/overlays"))
    try:
        text = (overlay / "kustomization.yaml").read_text()
        listed = "".join(f"  - ../../components/{c}\n" for c in components)
        text = text.replace("# components:\n#   - ../../components/external-metrics\n",
                            f"components:\n{listed}")
        assert components == [] or "components:\n" in text, "the overlay's comment moved"
        (scratch / "kustomization.yaml").write_text(text)
        shutil.copy(overlay / "certificates.yaml", scratch / "certificates.yaml")
        out = run([tool("kubectl"), "kustomize", str(scratch)]).stdout
    finally:
        shutil.rmtree(scratch)
    return docs(out)


@pytest.mark.parametrize("external,keda", [(False, False), (True, False), (False, True)],
                         ids=["base", "external-metrics", "keda-scaler"])
def test_chart_and_kustomize_render_the_same_objects(external, keda):
    """The chart (release "inferscale", cert-manager mode, monitoring on) and the kustomize
    cert-manager overlay with the components a user would add produce the same objects,
    field by field, apart from Helm's own labels and the Namespace. components/keda-scaler
    pairs with kedaScaler.enabled (KEDA's external scaler, in place of external metrics)."""
    components = ["prometheus", "grafana-dashboards"]
    if external:
        components.insert(0, "external-metrics")
    # The warm-pool controller's component, once it is in the tree: the chart's warmPool
    # switch must make the same objects.
    warm_pool = (REPO / "deploy/components/warm-pool/kustomization.yaml").exists()
    if warm_pool:
        components.append("warm-pool")
    if keda:
        components.append("keda-scaler")
    kustomized = keyed(kustomize_with_components(components))
    values = copy.deepcopy(MONITORING)
    values["metrics"].pop("podMonitor")
    values["dashboards"].pop("annotations")
    values.update({"tls": {"mode": "cert-manager"}, "externalMetrics": {"enabled": external},
                   "warmPool": {"enabled": warm_pool, "podMonitor": {"enabled": warm_pool}},
                   "kedaScaler": {"enabled": keda}})
    charted = keyed(render(values))
    if external:
        # The one intended difference: the chart knows the release serves external metrics
        # and watches that APIService too; the kustomize rules cannot know which components
        # a user lists (deploy/README.md says how to add it).
        rule = charted[("PrometheusRule", "inferscale")]
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                if r.get("alert") == "InferscaleMetricsAPIServiceUnavailable":
                    assert EXTERNAL_REGEX in r["expr"], r["expr"]
                    r["expr"] = r["expr"].replace(EXTERNAL_REGEX, "")
    assert set(kustomized) - set(charted) == KUSTOMIZE_ONLY
    assert set(charted) - set(kustomized) == set()
    for key in sorted(charted):
        assert charted[key] == kustomized[key], f"{key} differs:\nchart: " \
            f"{json.dumps(charted[key], indent=1)}\nkustomize: {json.dumps(kustomized[key], indent=1)}"


# --- the README's install commands -------------------------------------------------------------

def readme_install_commands() -> list[list[str]]:
    """The shell commands of the README's "## Install" code block, continuations joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def test_readme_installs_in_three_commands_that_render():
    """README's Install: `make image`, `helm install`, `kubectl get apiservice` -- the image it
    builds is the one the chart pins, the helm command renders (as `helm template`) with every
    object it promises, and the APIService the last command checks is one the chart makes."""
    commands = readme_install_commands()
    assert [c[0] for c in commands] == ["make", "helm", "kubectl"], commands
    make, helm_cmd, kubectl = commands
    assert make == ["make", "image"]
    assert helm_cmd[1] == "install" and helm_cmd[3] == "deploy/helm/inferscale", helm_cmd
    assert helm_cmd[4:7] == ["-n", "inferscale-system", "--create-namespace"], helm_cmd
    sets = [helm_cmd[i + 1] for i, a in enumerate(helm_cmd) if a == "--set"]
    objs = docs(run([tool("helm"), "template", helm_cmd[2], str(REPO / helm_cmd[3]),
                     "--namespace", helm_cmd[5], "--kube-version", kube_version(),
                     *[x for s in sets for x in ("--set", s)]]).stdout)
    kinds = {o["kind"] for o in objs}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "APIService"} <= kinds, kinds
    assert [o for o in by_kind(objs, "ConfigMap")
            if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    # The image `make image` tags (hack/image.sh) is the one the chart deploys.
    image = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/inferscale/adapter:{crate_version()}", image
    readme = (REPO / "README.md").read_text()
    assert f"ghcr.io/inferscale/{{adapter,scaler}}:{crate_version()}" in readme
    image_sh = (REPO / "hack/image.sh").read_text()
    assert 'REPO_PREFIX="${INFERSCALE_IMAGE_REPO:-ghcr.io/inferscale}"' in image_sh
    assert kubectl[:3] == ["kubectl", "get", "apiservice"], kubectl
    assert kubectl[3] in {o["metadata"]["name"] for o in by_kind(objs, "APIService")}
    # The README's other knobs are chart values.
    rendered = docs(helm_template(sets=["adapter.image.repository=r.example/inferscale/adapter",
                                        "metrics.rbac.prometheusServiceAccount.name=prom",
                                        "metrics.rbac.prometheusServiceAccount.namespace=mon"]
                                  ).stdout)
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "image"].startswith("r.example/inferscale/adapter:")
    bound = [b for b in by_kind(rendered, "ClusterRoleBinding")
             if {"kind": "ServiceAccount", "name": "prom", "namespace": "mon"} in b["subjects"]]
    assert bound, "the metrics ClusterRole is bound to the named ServiceAccount"
