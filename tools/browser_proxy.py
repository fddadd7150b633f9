"""The browser's gatekeeper: an HTTP proxy on loopback that forwards only allowed origins.

Every request of a browser context goes through it (Chromium is told to proxy loopback
too), so the allowlist holds for redirects, subresources, fetch/XHR, WebSockets and
service workers alike, not just for the URL the model asked for: each redirect hop is a
new request the proxy checks. Plain HTTP is forwarded request by request (one request
per upstream connection); HTTPS and WebSockets over TLS pass as CONNECT tunnels, checked
on host and port only (the proxy does not see inside TLS). It is not a general-purpose
proxy: no caching, no authentication, no HTTP/2 towards the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream, SocketStream

from tools.origins import OriginAllowlist

_MAX_HEAD_BYTES = 64 * 1024
_HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


REFUSED_MARKER = "swarm-allowlist"
"""The `X-Refused-By` header of the proxy's refusals (a page tells them from a site's own 403s)."""


class AllowlistProxy:
    """While entered, serves on `127.0.0.1:port`; `on_refused(url)` hears every refusal."""

    def __init__(
        self, allowlist: OriginAllowlist, *, on_refused: Callable[[str], None] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:  # fmt: skip
        self.allowlist = allowlist
        self._on_refused = on_refused or (lambda url: None)
        self._connect_timeout_s = connect_timeout_s
        self._stack = AsyncExitStack()
        self.port = 0

    async def __aenter__(self) -> AllowlistProxy:
        async with AsyncExitStack() as stack:
            listener = await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            )
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(listener.serve, self._handle)
            stack.callback(tg.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            try:
                head, rest = await _read_head(client)
                method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            except (ValueError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
                return
            if method == "CONNECT":
                await self._tunnel(client, target, rest)
            else:
                await self._forward(client, method, target, version, head, rest)

    async def _tunnel(self, client: SocketStream, target: str, rest: bytes) -> None:
        host, _, port_text = target.rpartition(":")
        if not port_text.isdigit() or not self.allowlist.allows_host_port(host, int(port_text)):
            self._on_refused(f"https://{target}")
            await _respond(client, 403, self.allowlist.refusal(f"https://{target}"))
            return
        upstream = await self._connect(client, host.strip("[]"), int(port_text))
        if upstream is None:
            return
        async with upstream:
            await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if rest:
                await upstream.send(rest)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pipe, client, upstream)
                tg.start_soon(_pipe, upstream, client)

    async def _forward(
        self, client: SocketStream, method: str, target: str, version: str, head: bytes, rest: bytes
    ) -> None:
        if not self.allowlist.allows(target):
            self._on_refused(target)
            await _respond(client, 403, self.allowlist.refusal(target))
            return
        url = urlsplit(target)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        lines = [f"{method} {path} {version}".encode("latin-1")]
        for line in head.split(b"\r\n")[1:]:
            if line and line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS:
                lines.append(line)
        lines.append(b"Connection: close")
        upstream = await self._connect(client, url.hostname or "", url.port or 80)
        if upstream is None:
            return
        async with upstream:
            await upstream.send(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pipe, client, upstream)
                await _pipe(upstream, client)  # the response ends when upstream closes
                tg.cancel_scope.cancel()

    async def _connect(self, client: SocketStream, host: str, port: int) -> SocketStream | None:
        try:
            with anyio.fail_after(self._connect_timeout_s):
                return await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError) as error:
            await _respond(client, 502, f"could not connect to {host}:{port}: {error}")
            return None


async def _read_head(stream: ByteStream) -> tuple[bytes, bytes]:
    """The request head (without the blank line) and whatever bytes followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def _respond(client: ByteStream, status: int, message: str) -> None:
    reason = {403: "Forbidden", 502: "Bad Gateway"}[status]
    body = f"<html><body><h1>{reason}</h1><p>{message}</p></body></html>".encode()
    marker = f"X-Refused-By: {REFUSED_MARKER}\r\n" if status == 403 else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{marker}Connection: close\r\n\r\n"
    )
    try:
        await client.send(head.encode() + body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


async def _pipe(source: ByteStream, sink: ByteStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
