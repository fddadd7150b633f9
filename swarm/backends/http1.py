"""`Http1Transport`: a lean HTTP/1.1 keep-alive transport under the openai client.

The official client builds its requests on httpx2 and hands each one to a transport;
which transport is its documented seam (`http_client=httpx2.AsyncClient(transport=...)`).
A big swarm's client is CPU-bound (1,000 sub-agents, 16 calls every 20 ms on one event
loop), and the transports on offer (httpcore2's, aiohttp's) spent a fifth of the model
call's CPU in their own layers of request, connection and stream objects. This one
writes the request bytes to a pooled asyncio connection and feeds the answer to
httptools' C parser (the one uvicorn uses), nothing else.

What it does: http and https (the client's SSL context: certifi, SSL_CERT_FILE), keep-alive
connections per origin reused for later requests, `Content-Length`, chunked and
close-delimited bodies, the client's connect, read and pool timeouts, one retry on a fresh connection when a
reused one turns out to have been closed by the server before answering. What it leaves
to the client: redirects, auth, headers. It speaks to no proxy (and httpx2 reads no
environment proxies for a client given a transport): where the environment names one, the
openai backend uses the SDK's own transports instead. Errors are httpx2's
(ConnectError, ReadTimeout, RemoteProtocolError...), which the openai client maps to its
own exceptions as with any transport.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import httptools
import httpx2

_MAX_BUFFERED = 1 << 20  # stop reading from the socket while this much body waits unread


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses its response as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._begin()

    def _begin(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.received = False  # any byte of the response
        self.delimited = False  # by a length or chunks (else by the connection's end)
        self.complete = False
        self.error: Exception | None = None
        self.head: asyncio.Future[int] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_s: float | None = None
        self.last_read = 0.0

    # -- the read timeout: one timer per response, re-armed only when it fires early --------
    # (a timer per wait, i.e. per streamed chunk, was a measurable share of the CPU per call)

    def arm(self, read_s: float | None) -> None:
        self.disarm()
        self.read_s = read_s
        if read_s is not None:
            self.last_read = self._loop.time()
            self._timer = self._loop.call_later(read_s, self._check_read)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_read(self) -> None:
        self._timer = None
        if self.complete or self.error is not None or self.read_s is None:
            return
        quiet = self._loop.time() - self.last_read
        if self.paused or quiet < self.read_s:  # paused: the reader is slow, not the server
            self._timer = self._loop.call_later(self.read_s - quiet if not self.paused else self.read_s, self._check_read)
            return
        self._fail(httpx2.ReadTimeout(f"no response data for {self.read_s:g}s"))
        self.close()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._timer is not None:
            self.last_read = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx2.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.complete and self.head is not None and self.head.done() and not self.delimited:
            self.complete = True  # a body without a length ends with its connection
            self._wake()
        if not self.complete:
            self._fail(httpx2.ReadError(f"the server closed the connection{f': {exc}' if exc else ''}"))

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self.delimited = True

    def on_headers_complete(self) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_result(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _MAX_BUFFERED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.disarm()
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
        self._wake()

    # -- for the transport ----------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: the caller sees it through `error` too
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self) -> list[bytes]:
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunks

    def close(self) -> None:
        if self.transport is not None:
            if self._loop.is_closed():  # made under a loop now closed: its socket goes with the transport object
                self._timer = None
            else:
                self.disarm()
                self.transport.close()
            self.transport = None


async def _within(awaitable, seconds: float | None, error: type[Exception], what: str):  # type: ignore[no-untyped-def]
    if seconds is None:
        return await awaitable
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise error(f"{what} took longer than {seconds:g}s") from None


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, pool: Http1Transport, origin: tuple[str, str, int], connection: _Connection) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                for chunk in connection.take():
                    yield chunk
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                connection.waiter = asyncio.get_running_loop().create_future()
                try:
                    await connection.waiter  # woken by data, the end, an error or the read timeout
                finally:
                    connection.waiter = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        if connection.complete and connection.usable and not connection.chunks:
            self._pool._release(self._origin, connection)
        else:  # unread or broken: its bytes would be mistaken for the next response
            self._pool._forget(connection)


class Http1Transport(httpx2.AsyncBaseTransport):
    """Pooled HTTP/1.1 connections for `httpx2.AsyncClient(transport=...)`."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        max_connections: int | None = 1000,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._keepalive_expiry_s = keepalive_expiry_s
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._open: set[_Connection] = set()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context(verify=self._verify)
        return self._ssl

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r} (http or https)")
        timeout = request.extensions.get("timeout") or {}
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        head = self._head(request)
        if request.headers.get("transfer-encoding", "").lower() == "chunked":
            body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
        data = head + body
        connection, reused = await self._acquire(origin, timeout)
        while True:
            try:
                status = await self._exchange(connection, data, timeout)
                break
            except BaseException as exc:  # cancelled or failed: that connection is not reused
                self._forget(connection)
                if not (reused and isinstance(exc, httpx2.ReadError) and not connection.received):
                    raise
            # The server closed a kept-alive connection as we sent on it (idle connections
            # are closed by servers at will) and answered nothing: the request goes once
            # more, on a fresh connection, as aiohttp's and httpcore's pools do.
            connection, reused = await self._acquire(origin, timeout, fresh=True)
        if request.method == "HEAD":
            connection.complete = True
        return httpx2.Response(
            status, headers=connection.headers, extensions={"http_version": b"HTTP/1.1"},
            stream=_ResponseStream(self, origin, connection),
        )

    @staticmethod
    def _head(request: httpx2.Request) -> bytes:
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
        for name, value in request.headers.raw:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _exchange(self, connection: _Connection, data: bytes, timeout: dict) -> int:  # type: ignore[type-arg]
        connection._begin()
        connection.head = asyncio.get_running_loop().create_future()
        if not connection.usable:
            raise httpx2.ReadError("the server closed the connection")
        assert connection.transport is not None
        connection.arm(timeout.get("read"))
        connection.transport.write(data)
        return await connection.head

    async def _acquire(self, origin: tuple[str, str, int], timeout: dict, *, fresh: bool = False) -> tuple[_Connection, bool]:  # type: ignore[type-arg]
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        idle = self._idle.get(origin)
        while idle and not fresh:
            connection = idle.pop()
            # (a connection made under another event loop, e.g. an earlier `anyio.run`, is dead)
            if connection.usable and connection._loop is loop and now - connection.idle_since < self._keepalive_expiry_s:
                return connection, True
            self._forget(connection)
        if self._slots is not None:
            await _within(self._slots.acquire(), timeout.get("pool"), httpx2.PoolTimeout, "waiting for a free connection")
        scheme, host, port = origin
        try:
            _, connection = await _within(
                loop.create_connection(
                    _Connection, host, port,
                    ssl=self._ssl_context() if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                ),
                timeout.get("connect"), httpx2.ConnectTimeout, f"connecting to {host}:{port}",
            )
        except BaseException as exc:
            if self._slots is not None:
                self._slots.release()
            if isinstance(exc, OSError):  # ssl.SSLError is one
                raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        self._open.add(connection)
        return connection, False

    def _release(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(origin, []).append(connection)

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            if self._slots is not None:
                self._slots.release()

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._forget(connection)
        self._idle.clear()
