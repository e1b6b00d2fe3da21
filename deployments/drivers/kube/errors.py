"""One error type for everything that can go wrong talking to a customer's cluster."""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from deployments.drivers.base import DriverError

KINDS = frozenset(
    {
        "invalid_kubeconfig",
        "unreachable",
        "timeout",
        "tls",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "invalid",
        "server_error",
    }
)

# The ClusterRole generated from rbac.PERMISSIONS; named here so every 403 points an operator at it.
CLUSTER_ROLE_NAME = "maas-control-plane"

# Conflicts (a concurrent writer bumped resourceVersion) and server-side trouble go away on their own;
# credentials, permissions and rejected manifests do not.
RETRYABLE_KINDS = frozenset({"unreachable", "timeout", "conflict", "server_error"})

_HTTP_KINDS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid", 400: "invalid"}


class KubeError(DriverError):
    """A failed conversation with a Kubernetes API server, in words an operator can act on."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, retryable: bool | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown KubeError kind {kind!r}")
        super().__init__(
            "Cluster" + "".join(part.title() for part in kind.split("_")),  # e.g. ClusterUnauthorized
            message,
            retryable=kind in RETRYABLE_KINDS if retryable is None else retryable,
            unreachable=kind in ("unreachable", "timeout"),
        )
        self.kind = kind
        self.status = status

    def __repr__(self) -> str:
        return f"KubeError(kind={self.kind!r}, status={self.status!r}, message={self.message!r})"


def status_message(body: str | bytes | None) -> str | None:
    """The `message` of a Kubernetes `Status` body, or None when the body is not one."""
    if not body:
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        text = body.strip()
        return text[:300] or None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return None


def from_http(status: int, body: str | bytes | None, *, method: str, path: str) -> KubeError:
    """Map a non-2xx answer of the API server to a KubeError."""
    detail = status_message(body)
    if status == 401:
        return KubeError(
            "unauthorized",
            "the API server rejected the credentials (401 Unauthorized): token expired or invalid"
            + (f" ({detail})" if detail and detail.lower() != "unauthorized" else ""),
            status=401,
        )
    if status == 403 and detail and "because it is being terminated" in detail:
        # The namespace is going away (its organization's last service was deleted); the next pass recreates it.
        return KubeError("conflict", f"{method} {path}: {detail}", status=403)
    if status == 403:
        return KubeError(
            "forbidden",
            f"the credentials are not allowed to {method} {path} (403 Forbidden)"
            + (f": {detail}" if detail else "")
            + f"; the platform needs every permission of the ClusterRole {CLUSTER_ROLE_NAME} shown on the cluster page",
            status=403,
        )
    if status == 429:
        return KubeError(
            "server_error",
            "the API server is throttling requests (429 Too Many Requests)" + (f": {detail}" if detail else ""),
            status=429,
        )
    kind = _HTTP_KINDS.get(status) or ("server_error" if status >= 500 else "invalid")
    words = {
        "not_found": "not found",
        "conflict": "conflict",
        "invalid": "rejected as invalid",
        "server_error": "API server error",
    }[kind]
    return KubeError(
        kind,
        f"{method} {path}: {words} ({status})" + (f": {detail}" if detail else ""),
        status=status,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Walk an exception, its causes and urllib3's wrapped `reason`s."""
    seen = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        todo.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))


_VERIFY_RE = re.compile(r"certificate verify failed: ([^()'\"\]]+?)\s*(?:\(_ssl|['\")\]]|$)")
_HOSTNAME_RE = re.compile(r"(Hostname mismatch[^'\")\]]*|doesn't match[^'\")\]]*)")


def tls_message(text: str) -> str:
    """Precise wording for an SSL failure found in `text` (urllib3 and ssl flatten it to strings)."""
    found = _VERIFY_RE.search(text)
    if found:
        return f"certificate verify failed: {found.group(1).strip()}"
    found = _HOSTNAME_RE.search(text)
    if found:
        return f"certificate verify failed: {found.group(1).strip()}"
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return "TLS handshake failed: the server does not speak TLS on this port (does the server URL need http:// instead of https://?)"  # noqa: E501
    found = re.search(r"\[SSL: ([A-Z_]+)\] ([^()'\"]+)", text)
    if found:
        return f"TLS handshake failed: {found.group(2).strip()}"
    return "TLS handshake failed"


def from_transport(exc: BaseException, *, server: str, timeout: float | None) -> KubeError:
    """Map a connection-level failure (no HTTP answer) to a KubeError."""
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            reason = getattr(item, "verify_message", None) or item.reason or str(item)
            return KubeError("tls", f"certificate verify failed: {reason}")
    for item in chain:
        if isinstance(item, (ssl.SSLError, urllib3.exceptions.SSLError)):
            return KubeError("tls", tls_message(str(item)))
    # urllib3 2.x makes NewConnectionError (and NameResolutionError) subclasses of ConnectTimeoutError, so
    # refusals and DNS failures must be recognised before timeouts.
    for item in chain:
        if isinstance(item, ConnectionRefusedError) or "Connection refused" in str(item):
            return KubeError("unreachable", f"cannot reach {server}: connection refused")
        if isinstance(item, (urllib3.exceptions.NameResolutionError, socket.gaierror)):
            return KubeError("unreachable", f"cannot reach {server}: the host name does not resolve")
    for item in chain:
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            return KubeError("unreachable", f"cannot reach {server}: {str(item).split(': ', 1)[-1]}")
    for item in chain:
        if isinstance(item, (urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)):
            if isinstance(item, urllib3.exceptions.ConnectTimeoutError):
                return KubeError("timeout", f"cannot reach {server}: connection timed out after {timeout:g}s")
            return KubeError("timeout", f"the API server at {server} did not answer within {timeout:g}s")
    for item in chain:
        if isinstance(item, (ConnectionResetError, urllib3.exceptions.ProtocolError)):
            return KubeError("unreachable", f"cannot reach {server}: the connection was closed by the server")
        if isinstance(item, OSError) and item.strerror:
            return KubeError("unreachable", f"cannot reach {server}: {item.strerror.lower()}")
    return KubeError("unreachable", f"cannot reach {server}: {type(exc).__name__}")


def from_api_exception(exc: ApiException, *, method: str, path: str, server: str) -> KubeError:
    """The kubernetes client folds SSL failures into ApiException(status=0); everything else is HTTP."""
    if not exc.status:
        text = str(exc.reason or "")
        if "SSL" in text or "certificate" in text:
            return KubeError("tls", tls_message(text))
        return KubeError("unreachable", f"cannot reach {server}: {text.splitlines()[0] if text else 'no answer'}")
    return from_http(exc.status, exc.body, method=method, path=path)
