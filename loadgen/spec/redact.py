"""Keeping secrets out of output: credentials inside URLs are replaced before a URL is shown or stored."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def split_credentials(url: str) -> tuple[str, str | None]:
    """A URL without its user:password, and the Basic Authorization header they stand for (None if absent)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return clean, "Basic " + base64.b64encode(pair).decode()
