"""Which resource a request is for, and the path its action class is decided on (pure).

The slug comes from the raw request target, before any decoding, and the rest of the
path is refused outright when any reading of it (percent-decoded once or twice, Unicode
normalised, backslashes as slashes, ``;`` parameters cut) could name a different place:
dot segments, encoded slashes or backslashes, empty segments, NUL and control characters,
invalid UTF-8. What survives means the same to the portal, the action rules and the
upstream, so it is forwarded byte for byte as the client sent it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = ["PREFIX", "PathError", "ProxyPath", "parse_target"]

PREFIX = "/apps/"
MAX_TARGET = 8 * 1024
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ALLOWED_RAW = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")
_DANGEROUS_DECODED = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathError(ValueError):
    """The request path is malformed or ambiguous: answer 400, never forward."""


@dataclass(frozen=True)
class ProxyPath:
    """``/apps/<slug><upstream_path>?<query>`` taken apart."""

    slug: str
    upstream_path: str  # raw, as sent (percent-encoding kept), starts with "/"
    path: str  # decoded: what the action rules match on
    query: str  # raw, without "?"

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.slug}/"

    @property
    def portal_path(self) -> str:
        return f"{PREFIX}{self.slug}{self.upstream_path}" + (f"?{self.query}" if self.query else "")


def _check_segments(path: str) -> None:
    if "\\" in path:
        raise PathError("backslash in path")
    if _CONTROL.search(path):
        raise PathError("control character in path")
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        if segment == "" and index != len(segments) - 1:
            raise PathError("empty path segment (//)")
        if segment.split(";", 1)[0] in (".", ".."):
            raise PathError("dot segment in path")


def parse_target(raw_path: str, query: str = "") -> ProxyPath | None:
    """Split a raw request path under ``/apps/``; None when it is not a proxy path at all.

    ``/apps/<slug>`` (no trailing slash) gives ``upstream_path=""``: the caller redirects.
    Raises :class:`PathError` for anything that could be read two ways.
    """
    if not raw_path.startswith(PREFIX):
        return None
    if len(raw_path) + len(query) > MAX_TARGET:
        raise PathError("request target too long")
    rest = raw_path[len(PREFIX):]
    slug, sep, tail = rest.partition("/")
    if not SLUG.match(slug):
        raise PathError("not a resource name")
    upstream_path = sep + tail
    if not upstream_path:
        return ProxyPath(slug, "", "", query)
    if not _ALLOWED_RAW.match(upstream_path) or _PCT.search(upstream_path):
        raise PathError("characters not allowed in a path")
    for variant in (upstream_path, upstream_path.replace("\\", "/")):
        _check_segments(variant)
    try:
        decoded = unquote_to_bytes(upstream_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PathError("path is not UTF-8") from exc
    if _DANGEROUS_DECODED.search(decoded):
        raise PathError("double-encoded dot, slash, backslash or percent")
    _check_segments(decoded)
    normalised = unicodedata.normalize("NFKC", decoded)
    if normalised != decoded:
        _check_segments(normalised)
        if "/" in normalised and normalised.count("/") != decoded.count("/"):
            raise PathError("Unicode look-alike of a slash")
    return ProxyPath(slug, upstream_path, decoded, query)
