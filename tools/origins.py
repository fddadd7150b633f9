"""The browser's origin allowlist: which `scheme://host:port` a page may load from.

An entry is an origin (`https://example.org`, `http://127.0.0.1:8000`), a subdomain
wildcard (`https://*.example.org`, which also matches `example.org`), or `*` for any
http(s) origin. Only `http` and `https` are ever allowed: `file:`, `data:`,
`javascript:` and the rest are refused whatever the list says. Matching is on the
parsed, lower-cased host and the explicit or default port, never on URL prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{self.host}" + ("" if default else f":{self.port}")


def parse_origin(url: str) -> Origin | None:
    """The http(s) origin of `url`, or None when it has another scheme or no host."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


class OriginAllowlist:
    """Decides whether a URL (or a proxy CONNECT target) may be loaded."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._is_any = False
        self._exact: set[Origin] = set()
        self._wildcards: set[Origin] = set()
        for entry in entries:
            self._add(entry)
        self.entries = sorted(str(origin) for origin in self._exact) + sorted(
            f"{o.scheme}://*.{o.host}:{o.port}" for o in self._wildcards
        ) + (["*"] if self._is_any else [])

    def _add(self, entry: str) -> None:
        if entry.strip() == "*":
            self._is_any = True
            return
        is_wildcard = "://*." in entry
        origin = parse_origin(entry.replace("://*.", "://", 1))
        if origin is None or urlsplit(entry).path not in ("", "/"):
            raise ValueError(f"not an http(s) origin: {entry!r} (expected e.g. 'https://example.org')")
        (self._wildcards if is_wildcard else self._exact).add(origin)

    def allows(self, url: str) -> bool:
        origin = parse_origin(url)
        return origin is not None and self.allows_origin(origin)

    def allows_origin(self, origin: Origin) -> bool:
        if self._is_any or origin in self._exact:
            return True
        return any(
            w.scheme == origin.scheme and w.port == origin.port
            and (origin.host == w.host or origin.host.endswith("." + w.host))
            for w in self._wildcards
        )  # fmt: skip

    def allows_host_port(self, host: str, port: int) -> bool:
        """For a CONNECT tunnel, where only host and port are known: either scheme will do."""
        host = host.lower().strip("[]")
        return any(self.allows_origin(Origin(scheme, host, port)) for scheme in _DEFAULT_PORTS)

    def refusal(self, url: str) -> str:
        """The message the model sees when `url` is refused."""
        if parse_origin(url) is None:
            return f"refused: {url!r} is not an http(s) URL (file:, data: and other schemes are not allowed)"
        allowed = ", ".join(self.entries) or "none"
        return f"refused: {parse_origin(url)} is not an allowed origin (allowed: {allowed})"
