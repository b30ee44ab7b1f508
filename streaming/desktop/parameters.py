"""guacd connection parameters from the resource, the tier's obligations and the vault.

Pure: the same inputs give the same parameters. Every control the tier asks for is set in
guacd too (disable-copy, disable-paste, read-only, no SFTP/drive), so the relay's own checks
are a second line, not the only one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streaming.desktop.vault import TargetSecret

__all__ = ["ParameterError", "connection_parameters", "split_upstream"]

_DEFAULT_PORTS = {"vnc": 5900, "ssh": 22, "rdp": 3389}


class ParameterError(ValueError):
    """The resource cannot be turned into a guacd connection (bad upstream or kind)."""


def split_upstream(kind: str, upstream: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a bare host) as host and port."""
    upstream = upstream.strip()
    host, sep, port = upstream.rpartition(":")
    if not sep or "]" in port:
        host, port = upstream, ""
    host = host.strip("[]")
    if not host or any(c in host for c in "/@ ?#"):
        raise ParameterError(f"{upstream!r} is not host:port")
    try:
        number = int(port) if port else _DEFAULT_PORTS[kind]
    except (ValueError, KeyError) as exc:
        raise ParameterError(f"{upstream!r} is not host:port for a {kind} resource") from exc
    if not 0 < number < 65536:
        raise ParameterError(f"{upstream!r} has no valid port")
    return host, number


def _flag(value: bool) -> str:
    return "true" if value else ""


def connection_parameters(
    kind: str, upstream: str, obligations: Mapping[str, Any], secret: TargetSecret | None, *,
    session_id: str, recordings_dir: Path,
) -> dict[str, str]:
    """The handshake values for a ``kind`` (vnc, ssh, rdp) connection to ``upstream``."""
    if kind not in _DEFAULT_PORTS:
        raise ParameterError(f"a {kind} resource is not pixel-streamed")
    host, port = split_upstream(kind, upstream)
    secret = secret or TargetSecret()
    files = obligations.get("file_transfer", "deny") != "deny"
    params = {
        "hostname": host,
        "port": str(port),
        "username": secret.username,
        "password": secret.password,
        "read-only": _flag(bool(obligations.get("read_only"))),
        "disable-copy": _flag(obligations.get("clipboard_out", "deny") == "deny"),
        "disable-paste": _flag(obligations.get("clipboard_in", "deny") == "deny"),
        "enable-sftp": _flag(files and kind == "ssh"),
    }
    if obligations.get("record"):
        params.update({
            "recording-path": str(recordings_dir),
            "recording-name": session_id,
            "create-recording-path": "true",
            "recording-include-keys": "",
        })
    if kind == "vnc":
        params.update({"cursor": "remote", "color-depth": "24"})
    elif kind == "ssh":
        params.update({"private-key": secret.private_key, "passphrase": secret.passphrase,
                       "font-size": "12", "color-scheme": "gray-black", "scrollback": "1000"})
        if obligations.get("record"):
            params.update({"typescript-path": str(recordings_dir),
                           "typescript-name": f"{session_id}.typescript",
                           "create-typescript-path": "true"})
    elif kind == "rdp":
        params.update({"security": "any", "ignore-cert": "true", "enable-drive": "",
                       "enable-printing": "", "disable-download": _flag(not files),
                       "disable-upload": _flag(not files), "resize-method": "display-update"})
    return params
