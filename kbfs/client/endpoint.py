"""Where the Kanboard server is and how to reach and trust it: URL normalisation, the proxy,
the TLS context, what a TLS failure means, and when the token would cross a network in clear.

Kept apart from the transport because all are settled once, before the first request, and
:func:`normalise_endpoint` is also public (re-exported by :mod:`kbfs.client`) for callers that
want to show or compare the URL a user typed. The command line calls :func:`ssl_context`,
and :func:`cleartext_warnings` before the mount goes to the background,
so a bad ``cafile`` or proxy is one line on the terminal and the clear-text warning is seen.
"""

from __future__ import annotations

import ipaddress
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


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for the user's setting; ValueError (one line) for an unusable CA file.

    ``True`` is the system's CA store (OpenSSL's default paths, which also honour
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), not httpx's default of certifi's bundle: a
    company CA installed on the machine must work. ``False`` verifies nothing. A path is a CA
    file (PEM) or a CA directory (``c_rehash`` layout) trusted instead of the system store.
    """
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        context = ssl.create_default_context(cafile=verify)
    except FileNotFoundError:
        raise ValueError(f"cafile {verify}: no such file") from None
    except PermissionError:
        raise ValueError(f"cafile {verify}: not readable by this user") from None
    except (ssl.SSLError, OSError, ValueError):
        raise ValueError(f"cafile {verify}: not a PEM file of CA certificates") from None
    if not context.cert_store_stats()["x509"]:
        raise ValueError(f"cafile {verify}: holds no CA certificate (expected PEM)")
    return context


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cleartext_warnings(endpoint: str, proxy: str | None = None) -> list[str]:
    """Why the token would cross a network unencrypted with this URL and proxy, if it would.

    Plain http sends the token in every request: fine on loopback, a leak anywhere else; and
    through a proxy, it reaches the proxy too (in clear, unless the proxy URL is https).
    """
    url = httpx.URL(endpoint)
    warnings = []
    if url.scheme == "http" and not _is_loopback(url.host):
        warnings.append(
            f"{url.host} is plain http: the API token crosses the network unencrypted; use https"
        )
    if proxy is not None and url.scheme == "http":
        via = httpx.URL(proxy)
        if via.scheme == "http" and not _is_loopback(via.host):
            warnings.append(
                f"the proxy {via.host} gets the API token unencrypted (plain http to Kanboard"
                " through a plain http proxy); use https"
            )
    return warnings


_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
}
_WRONG_NAME = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = {9, 10}  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


def tls_failure(exc: BaseException) -> str | None:
    """What failed and what to do, if ``exc`` (an httpx error) was caused by TLS; else None."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = str(cause.verify_message or cause.reason or "").rstrip(".")
            what = f"certificate verify failed: {why}"
            if cause.verify_code in _WRONG_NAME:
                return f"{what}; use the host name the certificate was issued for"
            if cause.verify_code in _EXPIRED:
                return f"{what}; the server's certificate needs renewing (or this clock is wrong)"
            return f"{what}; give the CA with -o cafile=FILE"
        if isinstance(cause, ssl.SSLError):
            if cause.reason in _NOT_TLS:
                return (
                    "the server does not speak TLS on that port: is the URL http://, not https://?"
                )
            return f"TLS handshake failed: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    return None
