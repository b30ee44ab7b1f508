"""Header hygiene as pure functions: what goes up, what comes back."""

from __future__ import annotations

import pytest

from streaming.proxy.headers import (
    HeaderError,
    ResponseRewrite,
    check_request_headers,
    response_headers,
    strip_cookies,
    upstream_request_headers,
)

REWRITE = ResponseRewrite("http://10.0.0.5:8001", "/", "/apps/notes/", frozenset({"sessionid", "csrftoken"}))


def test_content_length_is_returned_when_unambiguous():
    assert check_request_headers([(b"content-length", b"12")]) == 12
    assert check_request_headers([(b"transfer-encoding", b"chunked")]) is None


@pytest.mark.parametrize("headers", [
    [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")],
    [(b"content-length", b"1"), (b"content-length", b"2")],
    [(b"content-length", b"-1")],
    [(b"content-length", b"0x10")],
    [(b"transfer-encoding", b"identity")],
    [(b"connection", b"keep-alive, Host")],
    [(b"connection", b"x-forwarded-for")],
    [(b"bad name", b"x")],
    [(b"x", b"a\r\nInjected: 1")],
])
def test_ambiguous_headers_raise(headers):
    with pytest.raises(HeaderError):
        check_request_headers(headers)


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded():
    out = dict(upstream_request_headers(
        [(b"connection", b"keep-alive, x-secret-hop"), (b"keep-alive", b"5"), (b"x-secret-hop", b"1"),
         (b"te", b"trailers"), (b"upgrade", b"h2c"), (b"accept", b"text/html")],
        assertion="jwt", client_address="1.2.3.4", proto="https", host="portal", prefix="/apps/notes",
        portal_cookies=("sessionid",)))
    assert out == {"accept": "text/html", "x-portal-assertion": "jwt", "x-forwarded-for": "1.2.3.4",
                   "x-forwarded-proto": "https", "x-forwarded-host": "portal",
                   "x-forwarded-prefix": "/apps/notes"}


def test_portal_cookies_are_removed_from_every_cookie_header():
    assert strip_cookies("a=1; sessionid=s; csrftoken=c;b=2", ["sessionid", "csrftoken"]) == "a=1; b=2"
    out = upstream_request_headers([(b"cookie", b"sessionid=s"), (b"cookie", b"csrftoken=c")],
                                   assertion="j", client_address="", proto="https", host="h",
                                   prefix="/apps/x", portal_cookies=("sessionid", "csrftoken"))
    assert "cookie" not in dict(out)


@pytest.mark.parametrize(("location", "expected"), [
    ("http://10.0.0.5:8001/login?x=1", "/apps/notes/login?x=1"),
    ("/a/b#frag", "/apps/notes/a/b#frag"),
    ("relative/page", "relative/page"),
    ("https://sso.example/auth", "https://sso.example/auth"),
])
def test_locations_map_into_the_prefix(location, expected):
    assert REWRITE.location(location) == expected


def test_a_base_path_upstream_maps_its_base_onto_the_prefix():
    rewrite = ResponseRewrite("http://h:1", "/apps/notes/", "/apps/notes/", frozenset())
    assert rewrite.location("/apps/notes/notes/notes") == "/apps/notes/notes/notes"


def test_response_headers_lose_hop_by_hop_and_origin_wide_powers():
    out = response_headers([(b"connection", b"close"), (b"transfer-encoding", b"chunked"),
                            (b"clear-site-data", b'"*"'), (b"service-worker-allowed", b"/"),
                            (b"set-cookie", b"csrftoken=x; Path=/"), (b"content-type", b"text/html")],
                           REWRITE)
    assert out == [(b"content-type", b"text/html")]
