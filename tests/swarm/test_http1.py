"""`Http1Transport` (the openai backend's HTTP layer) against real loopback servers: raw
sockets that answer as scripted, some of them misbehaving on purpose, and TLS."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from swarm.backends.http1 import Http1Transport

Handler = Callable[[socket.socket, int], None]  # (connection, index of the request on it)


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class RawServer:
    """Accepts connections on 127.0.0.1; `handle(conn, n)` answers the n-th request of a
    connection (and may close it). Counts connections and keeps every request."""

    def __init__(self, handle: Handler, *, context: ssl.SSLContext | None = None) -> None:
        self.handle = handle
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.context is not None:
                try:
                    conn = self.context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            index = 0
            try:
                while (request := _read_request(conn)) is not None:
                    self.requests.append(request)
                    if self.handle(conn, index) is False:
                        return
                    index += 1
            except OSError:  # the client went away
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Handler, **kwargs: object) -> RawServer:
        servers.append(RawServer(handle, **kwargs))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"hello") -> Handler:
    def handle(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return handle


async def _get(url: str, transport: Http1Transport, **kwargs: object) -> httpx2.Response:
    async with httpx2.AsyncClient(transport=transport, **kwargs) as client:  # type: ignore[arg-type]
        return await client.get(url)


def test_connections_are_kept_alive_and_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(ok())

    async def main() -> list[bytes]:
        async with httpx2.AsyncClient(transport=Http1Transport()) as client:
            return [(await client.post(f"http://127.0.0.1:{server.port}/v1/x?q=1", content=b"{}")).content for _ in range(5)]

    assert anyio.run(main) == [b"hello"] * 5
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:%d\r\n" % server.port in server.requests[0].lower()


def test_chunked_stream_arrives_piece_by_piece(serve) -> None:  # type: ignore[no-untyped-def]
    sent = threading.Event()

    def handle(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n")
        sent.wait(5)  # the client must see the first piece before the rest is sent
        conn.sendall(b"6\r\ndata:2\r\n0\r\n\r\n")

    server = serve(handle)

    async def main() -> list[bytes]:
        pieces = []
        async with httpx2.AsyncClient(transport=Http1Transport()) as client:
            async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                async for piece in response.aiter_bytes():
                    pieces.append(piece)
                    sent.set()
        return pieces

    assert anyio.run(main) == [b"data:1", b"data:2"]


def test_a_body_that_ends_with_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    def handle(conn: socket.socket, _: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length given")
        return False  # closes

    server = serve(handle)
    response = anyio.run(_get, f"http://127.0.0.1:{server.port}/", Http1Transport())
    assert response.content == b"no length given"


def test_a_kept_alive_connection_the_server_dropped_is_retried_once(serve) -> None:  # type: ignore[no-untyped-def]
    # The server answers the first request of each connection, then drops the connection
    # when a second request comes on it, without a byte of answer.
    def handle(conn: socket.socket, index: int) -> bool:
        if index > 0:
            return False
        ok(b"fresh")(conn, index)
        return True

    server = serve(handle)

    async def main() -> list[bytes]:
        async with httpx2.AsyncClient(transport=Http1Transport()) as client:
            return [(await client.get(f"http://127.0.0.1:{server.port}/")).content for _ in range(3)]

    assert anyio.run(main) == [b"fresh"] * 3
    assert server.connections == 3


def test_a_response_left_half_read_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    left = threading.Event()

    def handle(conn: socket.socket, _: int) -> None:
        if len(server.requests) == 1:  # half the body now, the rest after the client has gone on
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
            left.wait(5)
            conn.sendall(b"-half")
        else:
            ok(b"second")(conn, 0)

    server = serve(handle)

    async def main() -> bytes:
        async with httpx2.AsyncClient(transport=Http1Transport()) as client:
            async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                assert await response.aiter_bytes().__anext__() == b"first"
            left.set()
            return (await client.get(f"http://127.0.0.1:{server.port}/")).content

    assert anyio.run(main) == b"second"  # not "-half" read as the next response
    assert server.connections == 2


def test_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda conn, _: threading.Event().wait(3))
    with pytest.raises(httpx2.ReadTimeout):
        anyio.run(lambda: _get(f"http://127.0.0.1:{server.port}/", Http1Transport(), timeout=0.3))


def test_a_slow_answer_on_a_reused_connection_is_a_timeout_not_a_retry(serve) -> None:  # type: ignore[no-untyped-def]
    def handle(conn: socket.socket, index: int) -> None:
        if index == 0:
            ok()(conn, index)
        else:
            threading.Event().wait(3)

    server = serve(handle)

    async def main() -> None:
        async with httpx2.AsyncClient(transport=Http1Transport(), timeout=0.3) as client:
            await client.get(f"http://127.0.0.1:{server.port}/")
            await client.get(f"http://127.0.0.1:{server.port}/")

    with pytest.raises(httpx2.ReadTimeout):
        anyio.run(main)
    assert len(server.requests) == 2


def test_read_timeout_between_pieces(serve) -> None:  # type: ignore[no-untyped-def]
    def handle(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        threading.Event().wait(3)

    server = serve(handle)
    with pytest.raises(httpx2.ReadTimeout):
        anyio.run(lambda: _get(f"http://127.0.0.1:{server.port}/", Http1Transport(), timeout=0.3))


def test_connect_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(httpx2.ConnectError, match=f"127.0.0.1:{port}"):
        anyio.run(_get, f"http://127.0.0.1:{port}/", Http1Transport())


def test_malformed_response(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda conn, _: conn.sendall(b"NOT HTTP AT ALL\r\n\r\n"))
    with pytest.raises(httpx2.RemoteProtocolError, match="malformed"):
        anyio.run(_get, f"http://127.0.0.1:{server.port}/", Http1Transport())


def test_unsupported_scheme() -> None:
    with pytest.raises(httpx2.UnsupportedProtocol):
        anyio.run(_get, "ftp://127.0.0.1/", Http1Transport())


def _self_signed(folder: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_https_verifies_the_server(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(ok(b"secret"), context=context)
    url = f"https://localhost:{server.port}/"

    trusting = ssl.create_default_context(cafile=str(cert))
    assert anyio.run(_get, url, Http1Transport(verify=trusting)).content == b"secret"
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        anyio.run(_get, url, Http1Transport())  # the system's roots do not know this one


def test_one_transport_across_event_loops(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(ok())
    client = httpx2.AsyncClient(transport=Http1Transport())

    async def get() -> bytes:
        return (await client.get(f"http://127.0.0.1:{server.port}/")).content

    assert anyio.run(get) == b"hello"
    assert anyio.run(get) == b"hello"  # the first loop's connection is not used again
    assert server.connections == 2


def test_the_openai_backend_goes_through_a_proxy_the_environment_names(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from swarm.backends.openai_compat import OpenAIChatModel
    from swarm.messages import Message
    from swarm.model import CallContext

    answer = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"via proxy"},"finish_reason":"stop"}],"model":"m"}'
    proxy = serve(ok(answer))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def main() -> str | None:
        model = OpenAIChatModel("http://model.invalid/v1", model_name="m", api_key="k", stream=False)
        try:
            response = await model.complete([Message(role="user", content="hi")], [], CallContext(agent_id="a", agent_name="a", role="subagent"))
        finally:
            await model.aclose()
        return response.message.content

    assert anyio.run(main) == "via proxy"
    assert proxy.requests[0].startswith(b"POST http://model.invalid/v1/chat/completions HTTP/1.1")


def test_a_compressed_body_reaches_the_client_decoded(serve) -> None:  # type: ignore[no-untyped-def]
    import gzip

    body = gzip.compress(b'{"ok": true}' * 100)

    def handle(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = serve(handle)
    response = anyio.run(_get, f"http://127.0.0.1:{server.port}/", Http1Transport())
    assert response.content == b'{"ok": true}' * 100
    assert b"accept-encoding: gzip" in server.requests[0].lower()


def test_a_body_larger_than_the_read_buffer(serve) -> None:  # type: ignore[no-untyped-def]
    body = bytes(range(256)) * 16_384  # 4 MiB: reading pauses and resumes on the way
    server = serve(ok(body))

    async def main() -> tuple[bytes, int]:
        async with httpx2.AsyncClient(transport=Http1Transport()) as client:
            async with client.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                pieces = []
                async for piece in response.aiter_bytes():
                    pieces.append(piece)
                    await anyio.sleep(0)  # a slow reader
            again = await client.get(f"http://127.0.0.1:{server.port}/")  # and the connection is reused
        return b"".join(pieces), len(again.content)

    assert anyio.run(main) == (body, len(body))
    assert server.connections == 1
