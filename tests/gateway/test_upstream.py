"""The replica clients: keep-alive reuse, chunked bodies, a stale pooled connection, the idle timeout and TLS with a
CA bundle on both GATEWAY_TRANSPORT paths (the ``transport`` fixture); the fast client's relay sink, freeing and
closing its pool with its event loop, and the direct uvicorn relay."""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import ssl
import time

import httptools
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deployments.selectors import Endpoint
from gateway import transport as gateway_transport
from gateway.transport import http as upstream

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7\r\ndata: a\r\n6\r\n\n\ndata\r\n8\r\n: b\n\n!!!\r\n0\r\n\r\n"
)


class Replica:
    """A raw HTTP/1.1 server: ``behaviour(n_on_connection, writer)`` answers each request."""

    def __init__(self, behaviour, ssl_context=None):
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader, writer):
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                self.requests.append(head + await reader.readexactly(length))
                n += 1
                if not await self.behaviour(n, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ssl_context)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc):
        self.server.close()


async def answer_chunked(n, writer):
    writer.write(CHUNKED)
    await writer.drain()
    return True


def endpoint(port, scheme="http", **kw):
    return Endpoint(
        replica="r", base_url=f"{scheme}://127.0.0.1:{port}/prefix", headers={"Authorization": "Bearer x"}, **kw
    )


@pytest.mark.asyncio
async def test_chunked_body_is_decoded_and_the_connection_reused(transport):
    replica = Replica(answer_chunked)
    async with replica as port:
        for i in range(3):
            response = await gateway_transport.request(endpoint(port), "/v1/chat/completions", b'{"a":1}', f"req-{i}")
            assert response.status == 200
            assert await response.read() == b"data: a\n\ndata: b\n\n!!!"
            response.release()
        await gateway_transport.close_upstream_sessions()
    assert replica.connections == 1
    head = replica.requests[0]
    assert head.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer x\r\n" in head and b"X-Request-Id: req-0\r\n" in head
    assert head.endswith(b'\r\n\r\n{"a":1}')


@pytest.mark.asyncio
async def test_a_sink_attached_after_reading_paused_for_a_full_buffer_gets_the_whole_body(settings):
    """Bytes beyond the high-water mark arrive before the relay takes over: reading must resume for the sink."""
    settings.GATEWAY_IDLE_TIMEOUT = 2.0
    piece = b"x" * 65536
    count = (upstream.HIGH_WATER // len(piece)) * 3

    async def big(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(count):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async with Replica(big) as port:
        response = await upstream.request(endpoint(port), "/v1/completions", b"{}", "req-big")
        await asyncio.sleep(0.5)  # the replica fills the buffer and reading pauses, as before a stream's start goes out
        received = []
        response.relay_to(received.append)
        while not response.complete:
            await response.wait()
        response.release()
        await upstream.close_upstream_sessions()
    assert sum(map(len, received)) == len(piece) * count


@pytest.mark.asyncio
async def test_a_pooled_connection_the_server_dropped_is_replaced_transparently(transport):
    async def one_per_connection(n, writer):
        if n > 1:  # as a server whose keep-alive ran out just as the request came
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    replica = Replica(one_per_connection)
    async with replica as port:
        for _ in range(3):
            response = await gateway_transport.request(endpoint(port), "/v1/completions", b"{}", "r")
            assert (response.status, await response.read()) == (200, b"ok")
            response.release()
        await gateway_transport.close_upstream_sessions()
    assert replica.connections == 3


@pytest.mark.asyncio
async def test_a_replica_silent_past_the_idle_timeout_fails_the_read(transport, settings):
    settings.GATEWAY_IDLE_TIMEOUT = 0.3

    async def hang_after_first_event(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: a\r\n")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async with Replica(hang_after_first_event) as port:
        response = await gateway_transport.request(endpoint(port), "/v1/completions", b"{}", "r")
        assert await response.next_chunk() == b"data: a"
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.TimeoutError):
            await response.next_chunk()
        assert 0.25 <= asyncio.get_running_loop().time() - started < 2
        response.close()
        await gateway_transport.close_upstream_sessions()


@pytest.mark.asyncio
async def test_refused_connection_is_an_oserror(transport):
    async with Replica(answer_chunked) as port:
        pass
    with pytest.raises(OSError):
        await gateway_transport.request(endpoint(port), "/v1/completions", b"{}", "r")


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "replica")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.mark.asyncio
async def test_tls_replica_with_a_ca_bundle_and_unverified(transport, tmp_path):
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with Replica(answer_chunked, ssl_context=server_context) as port:
        for verify in (cert, False):
            response = await gateway_transport.request(
                endpoint(port, "https", tls_verify=verify), "/v1/completions", b"{}", "r"
            )
            assert await response.read() == b"data: a\n\ndata: b\n\n!!!"
            response.release()
        with pytest.raises(ssl.SSLError):  # default verification does not trust a self-signed certificate
            await gateway_transport.request(endpoint(port, "https"), "/v1/completions", b"{}", "r")
        await gateway_transport.close_upstream_sessions()


def _live(kind) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@pytest.mark.asyncio
async def test_a_finished_answer_is_freed_without_the_cyclic_gc():
    """A response, its parser and a relay's sink closure must not keep each other alive: left to the cyclic GC, a
    worker's finished requests pile up until a collection stalls every stream of the worker for milliseconds."""

    async def hang(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: a\r\n")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async with Replica(answer_chunked) as port, Replica(hang) as hang_port:
        await upstream.close_upstream_sessions()
        gc.collect()
        gc.disable()  # what reference counting does not free stays, and is counted below
        try:
            before = (_live(upstream.Response), _live(httptools.HttpResponseParser))
            for i in range(3):
                response = await upstream.request(endpoint(port), "/v1/chat/completions", b"{}", f"req-{i}")
                received = []

                def sink(data, response=response):  # like gateway.asgi's relay: the sink knows its response
                    received.append(data)  # noqa: B023
                    if response.complete:
                        response.wake()

                response.relay_to(sink)
                while not response.complete:
                    await response.wait()
                response.release()
                assert b"".join(received) == b"data: a\n\ndata: b\n\n!!!"
                del response, sink
            response = await upstream.request(endpoint(port), "/v1/completions", b"{}", "read")
            assert await response.read() == b"data: a\n\ndata: b\n\n!!!"
            response.release()
            response = await upstream.request(endpoint(hang_port), "/v1/completions", b"{}", "aborted")
            response.relay_to(lambda data, response=response: None)
            await asyncio.sleep(0.05)
            response.close()  # a client that went away mid-stream
            del response
            for _ in range(3):
                await asyncio.sleep(0)  # the aborted connection's connection_lost
            assert (_live(upstream.Response), _live(httptools.HttpResponseParser)) == before
        finally:
            gc.enable()
        await upstream.close_upstream_sessions()


def test_the_pool_closes_with_its_event_loop():
    async def use():
        async with Replica(answer_chunked) as port:
            response = await upstream.request(endpoint(port), "/v1/completions", b"{}", "r")
            await response.read()
            response.release()
            pool = upstream.pool()
            assert len(pool.connections) == 1
            return pool

    pool = asyncio.run(use())  # no explicit close: asyncio.run's shutdown_asyncgens closes it
    assert pool.closed and not pool.connections and all(not stack for stack in pool.idle.values())


def test_streams_under_uvicorn_take_the_direct_relay():
    """The fast path writes middle chunks to uvicorn's transport itself; an upgrade that changes uvicorn's response
    cycle must be noticed here rather than silently fall back to the slower path."""
    import threading

    import uvicorn

    from gateway.transport.uvicorn import direct_cycle
    from tests.support.servers import free_port

    seen = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        seen["cycle"] = direct_cycle(send)
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, port=port, loop="uvloop", http="httptools", lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "ok"
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        server.should_exit = True
        thread.join(10)
    assert seen["cycle"] is not None
