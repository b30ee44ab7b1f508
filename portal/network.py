"""Which address a request really comes from.

Only peers inside ``PORTAL_TRUSTED_PROXIES`` may tell us the client's address
(``X-Forwarded-For``) or scheme (``X-Forwarded-Proto``); from anybody else those headers are
attacker-controlled and are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IPNetwork", "is_trusted", "resolve_client_address"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = address.strip()
    if address.startswith("[") and "]" in address:
        address = address[1 : address.index("]")]
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def is_trusted(address: str, trusted: Iterable[IPNetwork]) -> bool:
    """True when ``address`` lies in one of the trusted proxy networks."""
    ip = _parse(address)
    return ip is not None and any(ip in net for net in trusted)


def resolve_client_address(peer: str, forwarded_for: str | None, trusted: Iterable[IPNetwork]) -> str:
    """The client's address: the right-most ``X-Forwarded-For`` hop that is not a trusted proxy.

    Walking from the right matters: everything left of the first untrusted hop was written by
    the client itself and may be forged.
    """
    trusted = tuple(trusted)
    if not forwarded_for or not is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            return peer
        if not any(ip in net for net in trusted):
            return str(ip)
    return str(_parse(hops[0])) if hops else peer
