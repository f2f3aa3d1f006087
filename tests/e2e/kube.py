"""A small Kubernetes REST client for the harness: client-certificate TLS, JSON, apply.

Owns: talking to the kube-apiserver (or directly to the adapter) over HTTPS with a client
certificate or none, server-side apply of the few kinds the harness creates, and parsing
Kubernetes quantities. Does not own: ``kubectl`` invocations (``cluster.py``), which the tests
use where the issue asks for ``kubectl get --raw``.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from decimal import Decimal
from typing import Any

# Kinds the harness applies: kind -> (API prefix, plural, namespaced).
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "APIService": ("/apis/apiregistration.k8s.io/v1", "apiservices", False),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
}

# One HTTPS request may take this long; the API server answers in milliseconds when healthy.
REQUEST_TIMEOUT_SECONDS = 15.0


class KubeError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")


def ssl_context(ca: str | None, cert: str | None = None, key: str | None = None,
                server_name_check: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.check_hostname = bool(ca) and server_name_check
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Kube:
    """HTTPS JSON client for one server and one identity; thread-safe (a connection per thread)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext,
                 server_hostname: str | None = None):
        self.host, self.port, self.ctx = host, port, ctx
        self.server_hostname = server_hostname
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self.host, self.port, self.ctx, self.server_hostname)
            self._local.conn = conn
        return conn

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes]:
        hdrs = {"Accept": "application/json"}
        hdrs.update(headers or {})
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, data
            except (http.client.HTTPException, ConnectionError, OSError):
                self._local.conn = None
                try:
                    conn.close()
                except Exception:
                    pass
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, obj: Any = None,
                content_type: str = "application/json", ok=(200, 201, 202)) -> Any:
        body = None if obj is None else (obj if isinstance(obj, bytes) else
                                         json.dumps(obj).encode())
        status, data = self.raw(method, path, body,
                                {"Content-Type": content_type} if body is not None else None)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        if status not in ok:
            raise KubeError(method, path, status, parsed)
        return parsed

    def get(self, path: str, **params) -> Any:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("GET", path)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path, ok=(200, 202, 404))

    def apply(self, obj: dict) -> dict:
        """Server-side apply (field manager e2e, forced)."""
        return self.request("PATCH", object_path(obj) + "?fieldManager=inferscale-e2e&force=true",
                            obj, content_type="application/apply-patch+yaml")

    def apply_status(self, obj: dict) -> dict:
        return self.request(
            "PATCH", object_path(obj) + "/status?fieldManager=inferscale-e2e&force=true",
            obj, content_type="application/apply-patch+yaml")


class _Connection(http.client.HTTPSConnection):
    """HTTPS that may verify the certificate against a name other than the dialled address
    (what the aggregator does: it dials the Service and checks <service>.<namespace>.svc)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, server_hostname: str | None):
        super().__init__(host, port, context=ctx, timeout=REQUEST_TIMEOUT_SECONDS)
        self._sni = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._sni or self.host)


def object_path(obj: dict) -> str:
    kind = obj["kind"]
    prefix, plural, namespaced = KINDS[kind]
    meta = obj["metadata"]
    if namespaced:
        return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    return f"{prefix}/{plural}/{meta['name']}"


_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
}


def quantity(q: str | int | float) -> float:
    """A Kubernetes quantity ("250m", "3", "1500k", "1Gi", "1e3") as a float."""
    if isinstance(q, (int, float)):
        return float(q)
    s = q.strip()
    for suf in ("Ki", "Mi", "Gi", "Ti", "n", "u", "m", "k", "M", "G", "T"):
        if s.endswith(suf):
            return float(Decimal(s[: -len(suf)]) * _SUFFIX[suf])
    return float(Decimal(s))
