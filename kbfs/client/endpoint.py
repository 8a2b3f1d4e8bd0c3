"""Where the Kanboard server is and how to trust it: URL normalisation and the TLS context.

Kept apart from the transport because both are settled once, before the first request, and
:func:`normalise_endpoint` is also public (re-exported by :mod:`kbfs.client`) for callers that
want to show or compare the URL a user typed.
"""

from __future__ import annotations

import os
import re
import ssl

import httpx


def normalise_endpoint(url: str) -> str:
    """Turn whatever a user pasted into the ``.../jsonrpc.php`` URL.

    Accepts ``kb.example.com`` (https assumed), ``https://kb.example.com``, a trailing slash,
    ``.../jsonrpc.php``, ``.../index.php``, Kanboard under a sub-path (``https://x/kanboard``) and
    a pasted board URL with a query string. User info in the URL is dropped: credentials come
    from :class:`Credentials` only, so they never show up in logs or error messages via the URL.
    """
    text = url.strip()
    if not text:
        raise ValueError("empty Kanboard URL")
    if "://" not in text:
        text = "https://" + text
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid Kanboard URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"Kanboard URL must be http or https, not {parsed.scheme!r}")
    if not parsed.host:
        raise ValueError("Kanboard URL has no host")
    path = re.sub(r"/{2,}", "/", parsed.path).rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if last.endswith(".php"):
        path = path[: len(path) - len(last)].rstrip("/")
    return str(
        httpx.URL(
            scheme=parsed.scheme, host=parsed.host, port=parsed.port, path=path + "/jsonrpc.php"
        )
    )


def ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for the user's setting: a CA file or a CA directory (``c_rehash``
    layout) becomes a context, as httpx has deprecated taking a path; ``True``/``False`` pass."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return verify
