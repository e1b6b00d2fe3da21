"""Kubeconfig validation and API clients built from a kubeconfig held in memory.

A kubeconfig pasted by a customer is untrusted input: the platform refuses anything that would make the
kubernetes library read files from the platform's own disk (certificate-authority, client-key, tokenFile)
or run programs (exec plugins, auth-provider). Only inline data is accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, overload
from urllib.parse import urlencode, urlsplit

import kubernetes.client
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import load_kube_config_from_dict

from deployments.drivers.kube.errors import KubeError, from_api_exception, from_http, from_transport


def _platform_version() -> str:
    try:
        return metadata.version("maas")
    except metadata.PackageNotFoundError:
        return "0"


# Every request names the platform, so a cluster's audit log and API priority and fairness can tell it apart.
USER_AGENT = f"maas/{_platform_version()}"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "maas"

_FILE_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}


@dataclass
class KubeconfigInfo:
    contexts: list[str]
    current_context: str | None
    servers: dict[str, str]  # context -> server URL
    # Contexts present in the file that the platform cannot use, with the reason (e.g. an exec plugin).
    unusable: dict[str, str] = field(default_factory=dict)


def _fail(message: str) -> KubeError:
    return KubeError("invalid_kubeconfig", f"kubeconfig: {message}")


def _named(doc: dict, section: str, inner: str) -> dict[str, dict]:
    entries = doc.get(section)
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise _fail(f"'{section}' must be a list, got {type(entries).__name__}")
    named: dict[str, dict] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise _fail(f"{section}[{index}] has no name")
        body = entry.get(inner)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _fail(f"{section[:-1]} '{entry['name']}': '{inner}' must be a mapping")
        if entry["name"] in named:
            raise _fail(f"{section[:-1]} '{entry['name']}' is defined twice")
        named[entry["name"]] = body
    return named


def _check_b64(owner: str, key: str, value, *, pem: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{owner} {key} is empty")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{owner} {key} is not valid base64") from None
    if f"-----BEGIN {pem}".encode() not in raw and b"-----BEGIN" not in raw:
        raise _fail(f"{owner} {key} does not contain a PEM {pem.lower()} (expected '-----BEGIN ...')")


def _check_cluster(name: str, cluster: dict) -> None:
    owner = f"cluster '{name}'"
    server = cluster.get("server")
    if not server or not isinstance(server, str):
        raise _fail(f"{owner} has no server URL")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"{owner} server {server!r} is not an http(s) URL")
    for key in _FILE_KEYS["cluster"]:
        if cluster.get(key):
            raise _fail(f"{owner} refers to a file ({key}); paste the certificate inline as {key}-data")
    if cluster.get("certificate-authority-data"):
        _check_b64(owner, "certificate-authority-data", cluster["certificate-authority-data"], pem="CERTIFICATE")


def _check_user(name: str, user: dict) -> None:
    owner = f"user '{name}'"
    if "exec" in user:
        raise _fail(
            f"{owner} uses an exec credential plugin, which the platform cannot run; use a service-account token or client certificate data"  # noqa: E501
        )
    if "auth-provider" in user:
        raise _fail(
            f"{owner} uses an auth-provider plugin, which the platform cannot run; use a service-account token or client certificate data"  # noqa: E501
        )
    for key in _FILE_KEYS["user"]:
        if user.get(key):
            inline = "token" if key == "tokenFile" else f"{key}-data"
            raise _fail(f"{owner} refers to a file ({key}); paste it inline as {inline}")
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if cert_data or key_data:
        if not (cert_data and key_data):
            raise _fail(f"{owner} needs both client-certificate-data and client-key-data")
        _check_b64(owner, "client-certificate-data", cert_data, pem="CERTIFICATE")
        _check_b64(owner, "client-key-data", key_data, pem="PRIVATE KEY")
    token = user.get("token")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise _fail(f"{owner} has an empty token")
    if not (token or cert_data or (user.get("username") and user.get("password"))):
        raise _fail(f"{owner} has no credentials (token, client-certificate-data/client-key-data or username/password)")


@dataclass
class _Parsed:
    doc: dict
    clusters: dict[str, dict]
    users: dict[str, dict]
    contexts: dict[str, dict]
    current: str | None


def _load(text: str) -> _Parsed:
    if not isinstance(text, str) or not text.strip():
        raise _fail("empty document")
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = (
            f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        )
        raise _fail(f"not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(f"not valid YAML: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise _fail(f"expected a mapping with clusters, users and contexts, got {type(doc).__name__}")
    clusters = _named(doc, "clusters", "cluster")
    users = _named(doc, "users", "user")
    contexts = _named(doc, "contexts", "context")
    if not clusters:
        raise _fail("no clusters defined")
    if not contexts:
        raise _fail("no contexts defined")
    current = doc.get("current-context") or None
    if current is not None and current not in contexts:
        raise _fail(f"current-context '{current}' not found (available: {', '.join(contexts)})")
    return _Parsed(doc, clusters, users, contexts, current)


def _check_context(parsed: _Parsed, name: str) -> tuple[dict, dict]:
    context = parsed.contexts[name]
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not cluster_name:
        raise _fail(f"context '{name}' names no cluster")
    if cluster_name not in parsed.clusters:
        raise _fail(
            f"context '{name}' refers to cluster '{cluster_name}', which is not defined (available: {', '.join(parsed.clusters)})"  # noqa: E501
        )
    if not user_name:
        raise _fail(f"context '{name}' names no user")
    if user_name not in parsed.users:
        raise _fail(
            f"context '{name}' refers to user '{user_name}', which is not defined (available: {', '.join(parsed.users) or 'none'})"  # noqa: E501
        )
    _check_cluster(cluster_name, parsed.clusters[cluster_name])
    _check_user(user_name, parsed.users[user_name])
    return parsed.clusters[cluster_name], parsed.users[user_name]


def parse_kubeconfig(text: str) -> KubeconfigInfo:
    """Validate a kubeconfig and list its contexts; raises KubeError("invalid_kubeconfig") with a precise message.

    The current context (or the only one) must be usable; other broken contexts are reported in `unusable`.
    Messages never include tokens, keys or certificates.
    """
    parsed = _load(text)
    servers: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for name, context in parsed.contexts.items():
        cluster = parsed.clusters.get(context.get("cluster") or "")
        if cluster and isinstance(cluster.get("server"), str):
            servers[name] = cluster["server"]
        try:
            _check_context(parsed, name)
        except KubeError as exc:
            unusable[name] = exc.message
    must_work = parsed.current or (next(iter(parsed.contexts)) if len(parsed.contexts) == 1 else None)
    if must_work and must_work in unusable:
        raise KubeError("invalid_kubeconfig", unusable[must_work])
    return KubeconfigInfo(
        contexts=list(parsed.contexts), current_context=parsed.current, servers=servers, unusable=unusable
    )


def _select(parsed: _Parsed, context: str | None) -> str:
    if context:
        if context not in parsed.contexts:
            raise _fail(f"context '{context}' not found (available: {', '.join(parsed.contexts)})")
        return context
    if parsed.current:
        return parsed.current
    if len(parsed.contexts) == 1:
        return next(iter(parsed.contexts))
    raise _fail(f"no current-context set; choose one of: {', '.join(parsed.contexts)}")


_tempdir_lock = threading.Lock()
_tempdir: str | None = None


def _private_tempdir() -> str:
    """A 0700 directory for the CA/client certificate files the kubernetes library writes."""
    global _tempdir
    with _tempdir_lock:
        if _tempdir is None or not os.path.isdir(_tempdir):
            _tempdir = tempfile.mkdtemp(prefix="maas-kube-")
        return _tempdir


class KubeClient(kubernetes.client.ApiClient):
    """An ApiClient that remembers the request timeout and counts the API calls made through it."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, timeout: float, context: str):
        super().__init__(configuration=configuration)
        self.user_agent = USER_AGENT
        self.timeout = timeout
        self.context = context
        self.api_calls = 0
        self._count_lock = threading.Lock()

    @property
    def server(self) -> str:
        return self.configuration.host


def api_client(kubeconfig_text: str, context: str | None, *, timeout: float = 10) -> KubeClient:
    """An ApiClient for one context of an in-memory kubeconfig; every call this module makes uses `timeout`."""
    parsed = _load(kubeconfig_text)
    name = _select(parsed, context)
    cluster, user = _check_context(parsed, name)
    ctx = parsed.contexts[name]
    # Hand the library a kubeconfig reduced to the chosen context so nothing else in the file is ever read.
    minimal = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": ctx["cluster"], "cluster": cluster}],
        "users": [{"name": ctx["user"], "user": user}],
        "contexts": [{"name": name, "context": ctx}],
        "current-context": name,
    }
    configuration = kubernetes.client.Configuration()
    try:
        load_kube_config_from_dict(
            minimal,
            context=name,
            client_configuration=configuration,
            persist_config=False,
            temp_file_path=_private_tempdir(),
        )
    except (ConfigException, ValueError, TypeError) as exc:
        raise _fail(f"context '{name}' cannot be loaded: {exc}") from None
    # No silent retries: a dead cluster must fail within `timeout`, and the caller owns the retry policy.
    configuration.retries = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False)
    return KubeClient(configuration, timeout=timeout, context=name)


def _timeout_of(client: kubernetes.client.ApiClient) -> float:
    return getattr(client, "timeout", 10)


@overload
def request(
    client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: dict | None = ...,
    body: dict | None = ...,
    content_type: str = ...,
    not_found_ok: Literal[False] = ...,
) -> dict[str, Any]: ...


@overload
def request(
    client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: dict | None = ...,
    body: dict | None = ...,
    content_type: str = ...,
    not_found_ok: bool,
) -> dict[str, Any] | None: ...


def request(
    client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: dict | None = None,
    body: dict | None = None,
    content_type: str = "application/json",
    not_found_ok: bool = False,
) -> dict[str, Any] | None:
    """One API call; returns the decoded JSON body (None for a tolerated 404) or raises KubeError."""
    if isinstance(client, KubeClient):
        with client._count_lock:
            client.api_calls += 1
    timeout = _timeout_of(client)
    server = client.configuration.host
    headers = {"Accept": "application/json"}
    payload = None
    if body is not None:
        headers["Content-Type"] = content_type
        # The client serializes JSON bodies itself; apply patches go as JSON text (JSON is valid YAML).
        payload = json.dumps(body) if content_type == APPLY_PATCH else body
    url_path = path + ("?" + urlencode(query) if query else "")
    _, url, headers, _, _ = client.param_serialize(
        method, url_path, header_params=headers, auth_settings=["BearerToken"]
    )
    try:
        response = client.call_api(method, url, header_params=headers, body=payload, _request_timeout=timeout)
        data = response.read()
    except ApiException as exc:
        raise from_api_exception(exc, method=method, path=path, server=server) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise from_transport(exc, server=server, timeout=timeout) from None
    if response.status == 404 and not_found_ok:
        return None
    if not 200 <= response.status < 300:
        raise from_http(response.status, data, method=method, path=path)
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError:
        raise KubeError(
            "server_error",
            f"{method} {path}: the API server answered with something other than JSON",
            status=response.status,
        ) from None


@dataclass
class Credentials:
    """How to reach the API server from outside the kubernetes library (the pod proxy)."""

    server: str
    headers: dict[str, str]
    tls_verify: bool | str
    client_cert: tuple[str, str] | None


def credentials_of(client: kubernetes.client.ApiClient) -> Credentials:
    conf = client.configuration
    headers = {}
    authorization = conf.get_api_key_with_prefix("BearerToken") if "BearerToken" in conf.api_key else None
    if authorization:
        headers["Authorization"] = authorization
    tls_verify: bool | str = bool(conf.verify_ssl)
    if conf.verify_ssl and conf.ssl_ca_cert:
        tls_verify = conf.ssl_ca_cert
    cert = (conf.cert_file, conf.key_file) if conf.cert_file and conf.key_file else None
    return Credentials(server=conf.host.rstrip("/"), headers=headers, tls_verify=tls_verify, client_cert=cert)
