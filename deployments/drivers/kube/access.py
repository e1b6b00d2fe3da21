"""How the gateway reaches a cluster's replicas: credentials for the API-server proxy, TLS settings.

Derived from the cluster's (encrypted) kubeconfig at run time and cached per process; nothing secret is stored
with the replicas.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading

import yaml

from core.crypto import decrypt
from deployments.models import AccessMode, Cluster

_cache: dict[tuple[str, str], tuple[dict, bool | str, tuple[str, str] | None]] = {}
_lock = threading.Lock()


def _write_temp(data_b64: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="maas-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64decode(data_b64))
    os.chmod(path, 0o600)
    return path


def _from_kubeconfig(text: str, context_name: str) -> tuple[dict, bool | str, tuple[str, str] | None]:
    config = yaml.safe_load(text) or {}
    context_name = context_name or config.get("current-context") or ""
    context = next((c.get("context") or {} for c in config.get("contexts") or [] if c.get("name") == context_name), {})
    cluster = next(
        (c.get("cluster") or {} for c in config.get("clusters") or [] if c.get("name") == context.get("cluster")), {}
    )
    user = next((u.get("user") or {} for u in config.get("users") or [] if u.get("name") == context.get("user")), {})
    headers: dict = {}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    verify: bool | str = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority-data"):
        verify = _write_temp(cluster["certificate-authority-data"], ".crt")
    elif cluster.get("certificate-authority"):
        verify = cluster["certificate-authority"]
    cert = None
    if user.get("client-certificate-data") and user.get("client-key-data"):
        cert = (_write_temp(user["client-certificate-data"], ".crt"), _write_temp(user["client-key-data"], ".key"))
    elif user.get("client-certificate") and user.get("client-key"):
        cert = (user["client-certificate"], user["client-key"])
    return headers, verify, cert


def replica_access(cluster: Cluster) -> tuple[dict, bool | str, tuple[str, str] | None]:
    """(headers, tls_verify, client_cert) for requests to this cluster's replicas."""
    if cluster.access_mode != AccessMode.PROXY or not cluster.kubeconfig_encrypted:
        return {}, True, None
    key = (str(cluster.pk), hashlib.sha256(cluster.kubeconfig_encrypted.encode()).hexdigest())
    with _lock:
        cached = _cache.get(key)
        if cached is None:
            cached = _from_kubeconfig(decrypt(cluster.kubeconfig_encrypted), cluster.context)
            _cache[key] = cached
    return cached
