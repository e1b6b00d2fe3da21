"""Kubeconfig validation: precise messages, no secrets, nothing read from the platform's disk."""

import base64
import os

import pytest
import yaml

from deployments.drivers.kube import KubeError, api_client, parse_kubeconfig
from deployments.drivers.kube.config import credentials_of
from tests.support.kubeapi import make_certificate

CA_PEM, KEY_PEM = make_certificate()
CA_DATA = base64.b64encode(CA_PEM).decode()
SECRET_TOKEN = "sha256~s3cr3t-t0ken-do-not-print"


def kubeconfig(**changes) -> dict:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "a", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority-data": CA_DATA}},
            {"name": "b", "cluster": {"server": "https://10.0.0.2:6443"}},
        ],
        "users": [{"name": "admin", "user": {"token": SECRET_TOKEN}}],
        "contexts": [
            {"name": "staging", "context": {"cluster": "a", "user": "admin"}},
            {"name": "prod", "context": {"cluster": "b", "user": "admin"}},
        ],
        "current-context": "staging",
    }
    doc.update(changes)
    return doc


def text(doc) -> str:
    return yaml.safe_dump(doc)


def invalid(doc_or_text) -> str:
    source = doc_or_text if isinstance(doc_or_text, str) else text(doc_or_text)
    with pytest.raises(KubeError) as caught:
        parse_kubeconfig(source)
    assert caught.value.kind == "invalid_kubeconfig"
    assert caught.value.retryable is False
    assert SECRET_TOKEN not in caught.value.message
    return caught.value.message


def test_valid_kubeconfig_lists_contexts_and_servers():
    info = parse_kubeconfig(text(kubeconfig()))
    assert info.contexts == ["staging", "prod"]
    assert info.current_context == "staging"
    assert info.servers == {"staging": "https://10.0.0.1:6443", "prod": "https://10.0.0.2:6443"}
    assert info.unusable == {}


def test_not_yaml_says_where():
    message = invalid("clusters: [\n  - name: a\n    cluster: {server: x\n")
    assert message.startswith("kubeconfig: not valid YAML at line")


def test_not_a_mapping():
    assert invalid("- just\n- a list\n") == "kubeconfig: expected a mapping with clusters, users and contexts, got list"


def test_missing_clusters():
    assert invalid(kubeconfig(clusters=[])) == "kubeconfig: no clusters defined"


def test_missing_contexts():
    assert invalid(kubeconfig(contexts=None, **{"current-context": None})) == "kubeconfig: no contexts defined"


def test_current_context_not_defined():
    message = invalid(kubeconfig(**{"current-context": "dev"}))
    assert message == "kubeconfig: current-context 'dev' not found (available: staging, prod)"


def test_unknown_context_when_building_a_client():
    with pytest.raises(KubeError) as caught:
        api_client(text(kubeconfig()), "qa")
    assert caught.value.kind == "invalid_kubeconfig"
    assert caught.value.message == "kubeconfig: context 'qa' not found (available: staging, prod)"


def test_missing_server():
    doc = kubeconfig(
        clusters=[
            {"name": "a", "cluster": {"certificate-authority-data": CA_DATA}},
            {"name": "b", "cluster": {"server": "https://x"}},
        ]
    )
    assert invalid(doc) == "kubeconfig: cluster 'a' has no server URL"


def test_server_must_be_http_url():
    doc = kubeconfig(
        clusters=[
            {"name": "a", "cluster": {"server": "10.0.0.1:6443"}},
            {"name": "b", "cluster": {"server": "https://x"}},
        ]
    )
    assert invalid(doc) == "kubeconfig: cluster 'a' server '10.0.0.1:6443' is not an http(s) URL"


def test_bad_base64_ca():
    doc = kubeconfig(
        clusters=[
            {"name": "a", "cluster": {"server": "https://x", "certificate-authority-data": "not*base64!"}},
            {"name": "b", "cluster": {"server": "https://y"}},
        ]
    )
    assert invalid(doc) == "kubeconfig: cluster 'a' certificate-authority-data is not valid base64"


def test_base64_that_is_not_a_certificate():
    doc = kubeconfig(
        clusters=[
            {
                "name": "a",
                "cluster": {"server": "https://x", "certificate-authority-data": base64.b64encode(b"hello").decode()},
            },
            {"name": "b", "cluster": {"server": "https://y"}},
        ]
    )
    assert "does not contain a PEM certificate" in invalid(doc)


def test_context_referring_to_missing_user():
    doc = kubeconfig(contexts=[{"name": "staging", "context": {"cluster": "a", "user": "ghost"}}])
    assert (
        invalid(doc) == "kubeconfig: context 'staging' refers to user 'ghost', which is not defined (available: admin)"
    )


def test_exec_plugins_and_files_are_refused():
    exec_user = {"name": "admin", "user": {"exec": {"command": "aws", "args": ["eks", "get-token"]}}}
    assert "exec credential plugin" in invalid(kubeconfig(users=[exec_user]))
    file_user = {"name": "admin", "user": {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}
    assert (
        invalid(kubeconfig(users=[file_user]))
        == "kubeconfig: user 'admin' refers to a file (tokenFile); paste it inline as token"
    )
    file_ca = kubeconfig(
        clusters=[
            {"name": "a", "cluster": {"server": "https://x", "certificate-authority": "/etc/ca.crt"}},
            {"name": "b", "cluster": {"server": "https://y"}},
        ]
    )
    assert "refers to a file (certificate-authority)" in invalid(file_ca)


def test_user_without_credentials():
    assert "has no credentials" in invalid(kubeconfig(users=[{"name": "admin", "user": {}}]))


def test_broken_non_current_context_is_reported_not_raised():
    doc = kubeconfig(
        contexts=[
            {"name": "staging", "context": {"cluster": "a", "user": "admin"}},
            {"name": "eks", "context": {"cluster": "b", "user": "aws"}},
        ],
        users=[
            {"name": "admin", "user": {"token": SECRET_TOKEN}},
            {"name": "aws", "user": {"exec": {"command": "aws"}}},
        ],
    )
    info = parse_kubeconfig(text(doc))
    assert list(info.unusable) == ["eks"]
    assert "exec credential plugin" in info.unusable["eks"]
    with pytest.raises(KubeError, match="exec credential plugin"):
        api_client(text(doc), "eks")


def test_client_certificates_are_written_to_private_temp_files():
    cert_user = {
        "name": "admin",
        "user": {"client-certificate-data": CA_DATA, "client-key-data": base64.b64encode(KEY_PEM).decode()},
    }
    client = api_client(text(kubeconfig(users=[cert_user])), "staging", timeout=3)
    creds = credentials_of(client)
    assert creds.server == "https://10.0.0.1:6443"
    assert creds.headers == {}
    cert_file, key_file = creds.client_cert
    assert open(cert_file, "rb").read() == CA_PEM
    assert open(key_file, "rb").read() == KEY_PEM
    assert open(creds.tls_verify, "rb").read() == CA_PEM
    assert os.stat(os.path.dirname(key_file)).st_mode & 0o077 == 0
    assert os.stat(key_file).st_mode & 0o077 == 0
    assert client.timeout == 3
