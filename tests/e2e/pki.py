"""Certificates for the local control plane, made with the ``openssl`` command.

Owns: the CAs (cluster, front-proxy, the adapter's serving CA, and an untrusted one for the
refusal tests), the leaf certificates signed by them, the service-account key pair, and
kubeconfig files pointing at those certificates. EC P-256 keys: generating them takes
milliseconds, so the whole set is made fresh for every run.
Does not own: which component uses which certificate (``cluster.py``).
"""

from __future__ import annotations

import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Certificates outlive any run by far; a day keeps a leaked one harmless.
VALIDITY_DAYS = "2"


@dataclass(frozen=True)
class Cert:
    cert: str
    key: str


def _run(args: list[str], cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")


def make_ca(d: Path, name: str, cn: str) -> Cert:
    _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", VALIDITY_DAYS,
          "-subj", f"/CN={cn}",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"], d)
    return Cert(str(d / f"{name}.crt"), str(d / f"{name}.key"))


def make_leaf(d: Path, ca: Cert, name: str, cn: str, orgs: tuple[str, ...] = (),
              server_names: tuple[str, ...] = (), client: bool = True) -> Cert:
    """A leaf signed by ``ca``; ``server_names`` (DNS names and IPs) make it a serving cert."""
    subj = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
    _run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj], d)
    usages = []
    if server_names:
        usages.append("serverAuth")
    if client:
        usages.append("clientAuth")
    ext = ["basicConstraints=critical,CA:FALSE",
           "keyUsage=critical,digitalSignature,keyEncipherment",
           f"extendedKeyUsage={','.join(usages)}"]
    if server_names:
        sans = [(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}") for n in server_names]
        ext.append("subjectAltName=" + ",".join(sans))
    (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _run(["x509", "-req", "-in", f"{name}.csr", "-CA", ca.cert, "-CAkey", ca.key,
          "-set_serial", str(secrets.randbits(63)), "-out", f"{name}.crt", "-days", VALIDITY_DAYS,
          "-extfile", f"{name}.ext"], d)
    return Cert(str(d / f"{name}.crt"), str(d / f"{name}.key"))


@dataclass
class Pki:
    dir: Path
    ca: Cert                      # cluster CA: API server serving cert and user client certs
    front_proxy_ca: Cert
    adapter_ca: Cert              # the APIServices' caBundle
    untrusted_ca: Cert            # trusted by nobody: for the refusal tests
    apiserver: Cert
    front_proxy_client: Cert      # CN=front-proxy-client: the aggregator's identity
    front_proxy_evil: Cert        # signed by the front-proxy CA, CN not in the allowed names
    admin: Cert                   # O=system:masters
    controller_manager: Cert
    scheduler: Cert
    kwok: Cert
    adapter_client: Cert          # the adapter's identity: its service account's user name
    nobody: Cert                  # a valid user with no RBAC at all
    untrusted_client: Cert
    adapter_serving: Cert
    sa_key: str
    sa_pub: str


ADAPTER_USER = "system:serviceaccount:inferscale-system:inferscale-adapter"
ADAPTER_SERVICE_DNS = "inferscale-adapter.inferscale-system.svc"


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        cas = {n: pool.submit(make_ca, d, n, cn) for n, cn in [
            ("ca", "inferscale-e2e-ca"), ("front-proxy-ca", "inferscale-e2e-front-proxy-ca"),
            ("adapter-ca", "inferscale-e2e-adapter-ca"), ("untrusted-ca", "untrusted-ca")]}
        sa = pool.submit(_sa_keys, d)
        ca = cas["ca"].result()
        fp = cas["front-proxy-ca"].result()
        leaves = {
            "apiserver": (ca, "kube-apiserver", (), (
                "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "10.96.0.1"), True),
            "front-proxy-client": (fp, "front-proxy-client", (), (), True),
            "front-proxy-evil": (fp, "evil", (), (), True),
            "admin": (ca, "e2e-admin", ("system:masters",), (), True),
            "controller-manager": (ca, "system:kube-controller-manager", (), (), True),
            "scheduler": (ca, "system:kube-scheduler", (), (), True),
            "kwok": (ca, "kwok-controller", ("system:masters",), (), True),
            "adapter-client": (ca, ADAPTER_USER, (), (), True),
            "nobody": (ca, "nobody", (), (), True),
            "untrusted-client": (cas["untrusted-ca"].result(), "e2e-admin",
                                 ("system:masters",), (), True),
            "adapter-serving": (cas["adapter-ca"].result(), "inferscale-adapter", (),
                                (ADAPTER_SERVICE_DNS, "localhost", "127.0.0.1"), False),
        }
        futs = {n: pool.submit(make_leaf, d, signer, n, cn, orgs, sans, client)
                for n, (signer, cn, orgs, sans, client) in leaves.items()}
        got = {n: f.result() for n, f in futs.items()}
        sa_key, sa_pub = sa.result()
    return Pki(
        dir=d, ca=ca, front_proxy_ca=fp, adapter_ca=cas["adapter-ca"].result(),
        untrusted_ca=cas["untrusted-ca"].result(), apiserver=got["apiserver"],
        front_proxy_client=got["front-proxy-client"], front_proxy_evil=got["front-proxy-evil"],
        admin=got["admin"], controller_manager=got["controller-manager"],
        scheduler=got["scheduler"], kwok=got["kwok"], adapter_client=got["adapter-client"],
        nobody=got["nobody"], untrusted_client=got["untrusted-client"],
        adapter_serving=got["adapter-serving"], sa_key=sa_key, sa_pub=sa_pub)


def _sa_keys(d: Path) -> tuple[str, str]:
    _run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"],
         d)
    _run(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], d)
    return str(d / "sa.key"), str(d / "sa.pub")


def write_kubeconfig(path: Path, server: str, ca: str, client: Cert) -> str:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: user
  user:
    client-certificate: {client.cert}
    client-key: {client.key}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: user
current-context: e2e
""")
    return str(path)
