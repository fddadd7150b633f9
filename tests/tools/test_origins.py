"""The origin allowlist: exact origins, subdomain wildcards, schemes that are never allowed."""

from __future__ import annotations

import pytest

from tools.origins import OriginAllowlist


def test_exact_origin_matches_on_scheme_host_and_port() -> None:
    allow = OriginAllowlist(["http://127.0.0.1:8000", "https://example.org"])
    assert allow.allows("http://127.0.0.1:8000/a?b=c")
    assert allow.allows("https://EXAMPLE.org:443/x")
    assert not allow.allows("http://127.0.0.1:8001/")
    assert not allow.allows("http://example.org/")  # scheme matters
    assert not allow.allows("https://example.org.evil.com/")
    assert not allow.allows("https://example.org@evil.com/")  # userinfo trick: host is evil.com


def test_wildcard_allows_subdomains() -> None:
    allow = OriginAllowlist(["https://*.example.org"])
    assert allow.allows("https://docs.example.org/") and allow.allows("https://example.org/")
    assert not allow.allows("https://badexample.org/")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:text/html,x", "javascript:alert(1)", "ftp://x/"])
def test_non_http_schemes_are_never_allowed(url: str) -> None:
    assert not OriginAllowlist(["*"]).allows(url)
    assert "not an http(s) URL" in OriginAllowlist(["*"]).refusal(url)


def test_connect_targets_match_host_and_port() -> None:
    allow = OriginAllowlist(["https://example.org"])
    assert allow.allows_host_port("example.org", 443)
    assert not allow.allows_host_port("example.org", 8443)


@pytest.mark.parametrize("entry", ["example.org", "https://example.org/path", "file:///tmp"])
def test_bad_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        OriginAllowlist([entry])
