"""The HTTP side: one request handler that reads the request, passes the gate, and answers or proxies to a pod."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import yaml

from .resources import ApiError, status_body

if TYPE_CHECKING:
    from .server import KubeApiServer

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}

_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/:]+)(?::(\d+))?/proxy(/.*)?$")


class KubeApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KubeApiHTTPServer

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        return

    def setup(self):
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle + delayed ACK add 40 ms per request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        api = self.server.api
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = self._body()
        try:
            stall = api.gate(
                self.command,
                path,
                query,
                self.headers.get("Content-Type"),
                self.headers.get("Authorization"),
                self.headers.get("User-Agent") or "",
            )
            if stall:
                time.sleep(stall)
            proxy = _PROXY.match(path)
            if proxy:
                self._proxy(api, proxy, parts.query, body)
                return
            code, payload = api.handle(self.command, path, query, self.headers.get("Content-Type"), body)
        except ApiError as exc:
            code, payload = exc.code, exc.body
        except (ValueError, yaml.YAMLError, AttributeError, TypeError) as exc:
            code, payload = 400, status_body(400, f"the request body could not be decoded: {exc!r}")
        try:
            self._send_json(code, payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def _proxy(self, api: KubeApiServer, match: re.Match, raw_query: str, body: bytes) -> None:
        namespace, pod_name, port, rest = match.group(1), match.group(2), match.group(3), match.group(4) or "/"
        upstream = api.upstream_for(namespace, pod_name)
        if not upstream:
            raise ApiError(
                503,
                f"error trying to reach service: dial tcp 10.244.0.2:{port or 80}: connect: connection refused",
                reason="ServiceUnavailable",
            )
        target = urlsplit(upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            connection.request(
                self.command,
                target.path.rstrip("/") + rest + (f"?{raw_query}" if raw_query else ""),
                body=body or None,
                headers=headers,
            )
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            raise ApiError(503, f"error trying to reach service: {exc}", reason="ServiceUnavailable") from None
        try:
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(response.read())
            else:
                # Stream as it arrives (server-sent events from a chat completion).
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeApiHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    api: KubeApiServer

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, rejected certificates) are part of the tests, not server errors.
        return
