"""Files an isolated browser downloads (pure): is a response a download, and under what name.

In an isolated session the app's pages never reach the user, but a file the kiosk browser
downloads is exactly what the tier's file-transfer control is about. The proxy sees every
response the isolated browser gets, so it applies the control there: refused and audited, or
passed and audited with its name, size and SHA-256.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["download_name"]

_FILENAME_STAR = re.compile(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)")
_FILENAME = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;\s]+)')


def download_name(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The file name when the response is an attachment (``Content-Disposition``), else None."""
    for name, value in headers:
        if name.lower() != b"content-disposition":
            continue
        text = value.decode("latin-1")
        if not text.strip().lower().startswith("attachment"):
            return None
        star = _FILENAME_STAR.search(text)
        if star:
            return unquote(star.group(1).strip())[:255]
        plain = _FILENAME.search(text)
        if plain:
            return (plain.group(1) if plain.group(1) is not None else plain.group(2))[:255]
        return "download"
    return None
