"""The settings a proxied request reads, as one snapshot shared by HTTP and WebSocket.

Django's settings object costs a microsecond per read and a request reads some twenty of
them; more to the point, two code paths that read settings separately drift apart. Both the
HTTP and the WebSocket side take this snapshot, rebuilt whenever a setting changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.test.signals import setting_changed

from portal.network import is_trusted
from streaming.proxy import handoff
from streaming.proxy.origins import app_slug_for_host, split_host

__all__ = ["ProxyConf", "proxy_conf"]

_MEMO_LIMIT = 1024  # answers kept per memo: a stream of odd Host headers or peers is not kept


@dataclass(frozen=True, slots=True)
class ProxyConf:
    """The settings of one moment, with small memos of per-host and per-peer answers."""

    trusted_proxies: Any
    allowed_hosts: tuple[str, ...]
    ssl_redirect: bool
    issuer: str
    session_cookie: str
    portal_cookies: tuple[str, ...]
    chunk_bytes: int
    security_headers: tuple[tuple[bytes, bytes], ...]
    apps_domain: str  # "" in path mode
    portal_url: str | None
    portal_host: str  # the first allowed host: the portal's name when PORTAL_URL is unset
    valid_hosts: dict[str, bool]  # memo of host_allowed per Host header
    app_hosts: dict[str, str | None]  # memo of app_slug per Host header
    trusted_peers: dict[str, bool]  # memo of is_trusted per peer address

    @classmethod
    def load(cls) -> ProxyConf:
        """Read the settings now."""
        hsts: list[tuple[bytes, bytes]] = []
        if settings.SECURE_HSTS_SECONDS:
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            hsts.append((b"strict-transport-security", value.encode()))
        return cls(
            trusted_proxies=settings.PORTAL_TRUSTED_PROXIES,
            allowed_hosts=tuple(settings.ALLOWED_HOSTS)
            + (("localhost", "127.0.0.1", "[::1]") if settings.DEBUG else ()),
            ssl_redirect=bool(settings.SECURE_SSL_REDIRECT),
            issuer=settings.PORTAL_ASSERTION_ISSUER or "",
            session_cookie=settings.SESSION_COOKIE_NAME,
            # Every cookie of the portal's own: never forwarded to an app, never set by one.
            portal_cookies=(settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME,
                            settings.LANGUAGE_COOKIE_NAME, "messages", handoff.APP_COOKIE,
                            handoff.STATE_COOKIE),
            chunk_bytes=int(settings.PORTAL_PROXY_CHUNK_BYTES),
            security_headers=tuple(hsts),
            apps_domain=settings.PORTAL_APPS_DOMAIN or "",
            portal_url=settings.PORTAL_URL,
            portal_host=next((h for h in settings.ALLOWED_HOSTS if h and h[0] not in ".*"), "localhost"),
            valid_hosts={},
            app_hosts={},
            trusted_peers={},
        )

    def portal_origin(self, scheme: str, host: str) -> str:
        """Where the portal itself answers, seen from a request that came to ``host``."""
        if self.portal_url:
            return self.portal_url
        _domain, port = split_host(host)
        suffix = f":{port}" if port and port != {"http": "80", "https": "443"}.get(scheme) else ""
        return f"{scheme}://{self.portal_host}{suffix}"

    def peer_trusted(self, peer: str) -> bool:
        """Whether ``peer`` is one of the trusted proxies (remembered per address)."""
        return _remembered(self.trusted_peers, peer,
                           lambda: is_trusted(peer, self.trusted_proxies))

    def host_allowed(self, host: str) -> bool:
        """Whether the Host header names this portal (Django's own check, remembered)."""
        def check() -> bool:
            domain, _port = split_domain_port(host)
            return bool(domain) and validate_host(domain, list(self.allowed_hosts))
        return _remembered(self.valid_hosts, host, check)

    def app_slug(self, host: str) -> str | None:
        """The app whose own origin ``host`` is (None: none), remembered per Host header."""
        if host in self.app_hosts:
            return self.app_hosts[host]
        slug = app_slug_for_host(host, self.apps_domain)
        if len(self.app_hosts) < _MEMO_LIMIT:
            self.app_hosts[host] = slug
        return slug


def _remembered(memo: dict[str, bool], key: str, compute: Callable[[], bool]) -> bool:
    known = memo.get(key)
    if known is None:
        known = compute()
        if len(memo) < _MEMO_LIMIT:
            memo[key] = known
    return known


_snapshot: ProxyConf | None = None


def proxy_conf() -> ProxyConf:
    """The current snapshot (read once, again after any setting changes)."""
    global _snapshot
    if _snapshot is None:
        _snapshot = ProxyConf.load()
    return _snapshot


@receiver(setting_changed)
def _settings_changed(**_kwargs: Any) -> None:
    global _snapshot
    _snapshot = None
