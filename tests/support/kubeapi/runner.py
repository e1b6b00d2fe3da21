"""Running the test API server on an ephemeral port, over HTTP or HTTPS, in a background thread."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading

from .certificates import make_certificate
from .handler import KubeApiHTTPServer, KubeApiRequestHandler
from .server import KubeApiServer


@contextlib.contextmanager
def run_kube_api(*, tls: str | None = None, **options):
    """Start the test API server on an ephemeral 127.0.0.1 port in a background thread.

    tls: None (plain HTTP), "valid" (self-signed CA in the kubeconfig) or "expired" (that certificate has expired).
    Other options go to KubeApiServer (nodes, lws, default_storage_class, priority_classes, tokens, start_after,
    ready_after, terminate_after, git_version).
    """
    api = KubeApiServer(**options)
    httpd = KubeApiHTTPServer(("127.0.0.1", 0), KubeApiRequestHandler)
    httpd.api = api
    scheme = "http"
    files = []
    if tls:
        if tls not in ("valid", "expired"):
            raise ValueError("tls must be None, 'valid' or 'expired'")
        cert_pem, key_pem = make_certificate(expired=tls == "expired")
        api.ca_pem = cert_pem
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for content in (cert_pem, key_pem):
            handle = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)
            handle.write(content)
            handle.close()
            files.append(handle.name)
        context.load_cert_chain(files[0], files[1])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    api.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(name)
