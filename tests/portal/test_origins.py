"""Exact Origin matching: scheme, host and port must all be the portal's own."""

from __future__ import annotations

import pytest

from portal.origins import origin_matches


@pytest.mark.parametrize(("origin", "scheme", "host", "expected"), [
    ("https://portal.example", "https", "portal.example", True),
    ("https://portal.example", "wss", "portal.example", True),
    ("https://PORTAL.example", "https", "portal.EXAMPLE", True),
    ("https://portal.example:443", "https", "portal.example", True),
    ("https://portal.example", "https", "portal.example:443", True),
    ("http://portal.example:80", "ws", "portal.example", True),
    ("https://localhost:8443", "https", "localhost:8443", True),
    ("https://[::1]:8443", "https", "[::1]:8443", True),
    # what the host-only check let through
    ("http://portal.example", "https", "portal.example", False),
    ("https://portal.example:8443", "https", "portal.example", False),
    ("https://portal.example", "https", "portal.example:8443", False),
    ("https://portal.example:444", "https", "portal.example:443", False),
    ("http://portal.example:443", "https", "portal.example", False),
    # look-alikes and malformed values
    ("https://portal.example.evil.test", "https", "portal.example", False),
    ("https://evil.test@portal.example", "https", "portal.example", False),
    ("https://portal.example/", "https", "portal.example", False),
    ("https://portal.example/path", "https", "portal.example", False),
    ("https://portal.example:", "https", "portal.example", False),
    ("https://portal.example:99999", "https", "portal.example:99999", False),
    ("https://portal.example:x", "https", "portal.example", False),
    ("ftp://portal.example", "https", "portal.example", False),
    ("portal.example", "https", "portal.example", False),
    ("null", "https", "portal.example", False),
    ("", "https", "portal.example", False),
    (None, "https", "portal.example", False),
    ("https://portal.example", "gopher", "portal.example", False),
    ("https://portal.example", "https", "", False),
])
def test_only_the_portals_exact_origin_matches(origin, scheme, host, expected):
    assert origin_matches(origin, scheme=scheme, host=host) is expected
