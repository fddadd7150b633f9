"""A loopback HTTP server for the fixture web, started in-process (a thread) or from the CLI.

Serves the pages of one `World` (rendered once), `/search?q=` and its JSON twin
`/api/search?q=&n=` (for the HTTP `web_search` backend), plus a few routes under `/_test/`
that the browser tests need: an open redirect, a download, a page far too big for a
model's context. `latency_s` makes it answer like a remote site: each request waits that
long before its response (in its own thread, so concurrent requests wait together). It
binds 127.0.0.1 only, on port 0 unless told otherwise; it is a test fixture, not a web
server to expose to anyone.
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from tools.fixture_web.render import entity_page, index_page, prose, search, search_page
from tools.fixture_web.world import World


MAX_LATENCY_S = 60.0


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a swarm's 16 agents connecting at once overflow
    # it, and each connection refused that way waits for its SYN's retransmission (1 s).
    request_queue_size = 128
    daemon_threads = True


class FixtureWebServer:
    """The fixture web on `base_url` while entered (`with FixtureWebServer(world) as web:`)."""

    def __init__(self, world: World, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0) -> None:
        if not 0.0 <= latency_s <= MAX_LATENCY_S:
            raise ValueError(f"latency_s must be between 0 and {MAX_LATENCY_S:g} seconds, not {latency_s}")
        self.world = world
        self.latency_s = latency_s
        self.requested_paths: list[str] = []
        """Every path requested, in order (tests use it to prove a request never arrived)."""
        self._pages = {"/": index_page(world), "/index.html": index_page(world)}
        self._pages["/search.html"] = search_page(world, None)
        self._pages |= {entity.path: entity_page(world, entity) for entity in world.entities}
        self._server = _Server((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fixture-web", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FixtureWebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> FixtureWebServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def respond(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for a GET of `target` (path and query)."""
        url = urlsplit(target)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        html_type = {"Content-Type": "text/html; charset=utf-8"}
        if url.path in self._pages:
            return HTTPStatus.OK, html_type, self._pages[url.path].encode()
        if url.path == "/search":
            return HTTPStatus.OK, html_type, search_page(self.world, query.get("q", "")).encode()
        if url.path == "/api/search":  # the same search as JSON, for the HTTP web_search backend
            hits = search(self.world, query.get("q", ""))[: int(query.get("n", "10"))]
            results = [
                {"title": e.name, "url": self.base_url + e.path, "snippet": prose(self.world, e, is_html=False)}
                for e in hits
            ]
            return HTTPStatus.OK, {"Content-Type": "application/json"}, json.dumps({"results": results}).encode()
        if url.path == "/_test/redirect" and "to" in query:
            return HTTPStatus.FOUND, {"Location": query["to"]}, b""
        if url.path == "/_test/download":
            headers = {"Content-Type": "application/octet-stream", "Content-Disposition": 'attachment; filename="data.bin"'}
            return HTTPStatus.OK, headers, b"\x00" * 1024
        if url.path == "/_test/big":
            rows = "".join(f'<li><a href="/index.html">link number {i}</a></li>' for i in range(int(query.get("n", "5000"))))
            return HTTPStatus.OK, html_type, f"<html><body><h1>Big</h1><ul>{rows}</ul></body></html>".encode()
        return HTTPStatus.NOT_FOUND, html_type, b"<html><body><h1>Not found</h1></body></html>"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requested_paths.append(self.path)
                if server.latency_s:
                    time.sleep(server.latency_s)  # a remote site's round trip and server time
                status, headers, body = server.respond(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: tests and the demo read their own output

        return Handler
