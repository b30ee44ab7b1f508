"""The one place that reads the environment.

Settings import :data:`CONFIG`; nothing else in the code base touches ``os.environ``.
Values may be given inline or as ``file:///path`` (a mounted secret), and a missing or weak
secret stops the process at start with a message that says what to do.

:func:`secure_var_dir` keeps ``var/`` (SQLite database, secret key, demo secrets, TLS keys,
logs, recordings) to the portal's own user: any local user who could read the database would
read every TOTP seed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BASE_DIR", "CONFIG", "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "Config", "ConfigError",
           "load_config", "secure_var_dir"]

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# Sub-directories of var/ whose files are secrets or personal data, not only their folder.
_PRIVATE_FILE_DIRS = ("log", "tls", "demo")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(RuntimeError):
    """The environment describes a portal that must not start."""


def _read(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None:
        return None
    if raw.startswith("file://"):
        path = Path(raw.removeprefix("file://"))
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name} points at {path}, which cannot be read: {exc}") from exc
    if raw.startswith("env://"):
        return _read(env, raw.removeprefix("env://"))
    return raw


def _flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = _read(env, name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (got {raw!r})")


def _secret_key(env: dict[str, str]) -> str:
    key = _read(env, "PORTAL_SECRET_KEY")
    if key is None:
        # No key configured: keep a random one under var/ so sessions survive restarts of
        # a single-machine install. Replicas must share PORTAL_SECRET_KEY instead.
        path = VAR_DIR / "secret_key"
        if not path.exists():
            VAR_DIR.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
            # Created 0600, never world-readable for a moment (a chmod after writing would be).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(64))
        key = path.read_text().strip()
    if len(key) < 50 or len(set(key)) < 5:
        raise ConfigError(
            "PORTAL_SECRET_KEY is too weak: use at least 50 random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(64))')"
        )
    return key


def _networks(env: dict[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = _read(env, name) or ""
    nets = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{name}: {part!r} is not an IP network (CIDR): {exc}") from exc
    return tuple(nets)


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a port number (got {raw!r})") from exc
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535 (got {port})")
    return port


@dataclass(frozen=True)
class Config:
    """Everything the portal takes from its environment, validated."""

    secret_key: str
    debug: bool
    allowed_hosts: tuple[str, ...]
    database_url: str | None
    redis_url: str | None
    guacd_host: str
    guacd_port: int
    recordings_dir: Path
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    var_dir: Path = field(default=VAR_DIR)
    metrics_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assertion_keys_dir: Path = field(default=VAR_DIR / "assertion_keys")
    vault_keys: tuple[str, ...] = ()
    siem_webhook_url: str | None = None
    siem_webhook_token: str | None = None
    siem_syslog: str | None = None
    guacd_tls: bool = False
    guacd_ca_file: Path | None = None
    proxy_ca_file: Path | None = None
    apps_domain: str = "apps.localhost"
    portal_url: str | None = None
    oidc_providers: tuple = ()  # portal.sso.providers.IdentityProvider, one per trusted IdP


def _url(env: dict[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = _read(env, name) or None
    if raw is not None and (raw.partition("://")[0] not in schemes or not raw.partition("://")[2]):
        raise ConfigError(f"{name} must look like {schemes[0]}://host:port... (got {raw!r})")
    return raw


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,200}}$){_LABEL}(\.{_LABEL})*$")


def _apps_domain(env: dict[str, str]) -> str:
    """PORTAL_APPS_DOMAIN: the parent domain of the app origins ("" turns host mode off)."""
    raw = _read(env, "PORTAL_APPS_DOMAIN")
    if raw is None:
        return "apps.localhost"
    domain = raw.strip().lower().removesuffix(".")
    if domain and not _DOMAIN.match(domain):
        raise ConfigError(f"PORTAL_APPS_DOMAIN must be a DNS name such as apps.example.com (got {raw!r})")
    return domain


def _portal_url(env: dict[str, str]) -> str | None:
    raw = (_url(env, "PORTAL_URL", ("https", "http")) or "").rstrip("/")
    if raw and "/" in raw.partition("://")[2]:
        raise ConfigError(f"PORTAL_URL is an origin only, such as https://portal.example.com (got {raw!r})")
    return raw or None


def _ca_file(env: dict[str, str], name: str) -> Path | None:
    raw = _read(env, name)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name} must name a PEM file of CA certificates (no file at {raw!r})")
    return path


def _oidc_providers(env: dict[str, str]) -> tuple:
    """PORTAL_OIDC_PROVIDERS: a JSON list of IdPs (inline or file://); each client_secret may
    itself be env://NAME or file:///path (docs/decisions/0021-oidc-sso.md)."""
    import json

    from portal.sso.providers import ProviderConfigError, parse_providers

    raw = _read(env, "PORTAL_OIDC_PROVIDERS")
    if not raw:
        return ()
    try:
        items = json.loads(raw)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("client_secret"), str):
                secret = {**env, "client_secret": item["client_secret"]}
                item["client_secret"] = _read(secret, "client_secret")
        return parse_providers(items)
    except (ValueError, ProviderConfigError) as exc:
        raise ConfigError(f"PORTAL_OIDC_PROVIDERS: {exc}") from exc


def load_config(env: dict[str, str] | None = None) -> Config:
    """Read and validate the environment (``os.environ`` unless given)."""
    env = dict(os.environ if env is None else env)
    hosts = tuple(
        h.strip()
        for h in (_read(env, "PORTAL_ALLOWED_HOSTS") or "localhost,127.0.0.1,[::1]").split(",")
        if h.strip()
    )
    recordings = _read(env, "PORTAL_RECORDINGS_DIR")
    return Config(
        secret_key=_secret_key(env),
        debug=_flag(env, "PORTAL_DEBUG"),
        allowed_hosts=hosts,
        database_url=_read(env, "DATABASE_URL") or None,
        redis_url=_read(env, "REDIS_URL") or None,
        guacd_host=_read(env, "GUACD_HOST") or "127.0.0.1",
        guacd_port=_port(env, "GUACD_PORT", 4822),
        recordings_dir=Path(recordings) if recordings else VAR_DIR / "recordings",
        trusted_proxies=_networks(env, "PORTAL_TRUSTED_PROXIES"),
        metrics_networks=_networks(env, "PORTAL_METRICS_NETWORKS") or (
            ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        vault_keys=tuple(k.strip() for k in (_read(env, "PORTAL_VAULT_KEYS") or "").split(",") if k.strip()),
        assertion_keys_dir=Path(_read(env, "PORTAL_ASSERTION_KEYS_DIR") or VAR_DIR / "assertion_keys"),
        siem_webhook_url=_url(env, "PORTAL_SIEM_WEBHOOK_URL", ("https", "http")),
        siem_webhook_token=_read(env, "PORTAL_SIEM_WEBHOOK_TOKEN") or None,
        siem_syslog=_url(env, "PORTAL_SIEM_SYSLOG", ("udp", "tcp")),
        guacd_tls=_flag(env, "GUACD_TLS"),
        guacd_ca_file=_ca_file(env, "GUACD_CA_FILE"),
        proxy_ca_file=_ca_file(env, "PORTAL_PROXY_CA_FILE"),
        apps_domain=_apps_domain(env),
        portal_url=_portal_url(env),
        oidc_providers=_oidc_providers(env),
    )


def _chmod(path: Path, mode: int) -> None:
    try:
        current = path.stat().st_mode & 0o777
        if current != mode:
            path.chmod(mode)
    except FileNotFoundError:  # a SQLite -wal/-shm may go away while we look
        pass
    except PermissionError as exc:
        raise ConfigError(f"{path} is mode {current:o} and cannot be made {mode:o} ({exc}): "
                          "give it to the user the portal runs as, or remove it") from exc


def secure_var_dir(var_dir: Path) -> None:
    """Make what the portal writes private to its user, from the first start on.

    Sets the process umask to 077 (new files 0600, directories 0700: SQLite then creates the
    database and its -wal/-shm 0600), creates ``var/`` 0700 and tightens what an older
    install left readable: ``var/`` and its folders (recordings, assertion keys, logs, TLS)
    0700, the files in it and in its log, TLS and demo folders 0600. Recordings or keys
    configured outside ``var/`` (a shared volume) keep the modes their operator gave them.
    """
    os.umask(0o077)
    var_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _chmod(var_dir, PRIVATE_DIR_MODE)
    for entry in var_dir.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_dir():
            _chmod(entry, PRIVATE_DIR_MODE)
            if entry.name in _PRIVATE_FILE_DIRS:
                for inner in entry.iterdir():
                    if inner.is_file() and not inner.is_symlink():
                        _chmod(inner, PRIVATE_FILE_MODE)
        elif entry.is_file():
            _chmod(entry, PRIVATE_FILE_MODE)


CONFIG = load_config()
