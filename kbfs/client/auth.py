"""HTTP Basic credentials whose secret can be replaced while the client runs (a rotated token).

An administrator who rotates the API token writes the new one into the token file; without a
way to pick it up, every call of a running mount answers EACCES until it is remounted. The
client is handed a function that reads the secret again (the mount builds it from where the
secret came from), and :meth:`RotatingBasicAuth.refresh` asks it after a 401 or on request
(SIGHUP). Each request takes the secret current when it is sent, so calls in flight during a
change simply finish with the one they started with.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator

import httpx

#: Re-reads the secret from its source; None when it cannot (the reason is the caller's to log).
SecretSource = Callable[[], str | None]


class RotatingBasicAuth(httpx.Auth):
    """``Authorization: Basic`` built from the current secret at each request."""

    def __init__(self, username: str, secret: str, source: SecretSource | None = None) -> None:
        self._username = username
        self._source = source
        self._secret = ""
        self._header = ""
        self._set(secret)

    def _set(self, secret: str) -> None:
        self._secret = secret
        pair = f"{self._username}:{secret}".encode()
        self._header = "Basic " + base64.b64encode(pair).decode("ascii")

    def __repr__(self) -> str:
        return f"RotatingBasicAuth(user={self._username!r})"

    @property
    def secret(self) -> str:
        return self._secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def refresh(self, used: str) -> bool:
        """Whether there is a secret other than ``used`` (the one a refused request carried).

        True at once if another request already picked up a new one; otherwise the source is
        read again, and True if it now says something else.
        """
        if self._secret != used:
            return True
        if self._source is None:
            return False
        fresh = self._source()
        if not fresh or fresh == self._secret:
            return False
        self._set(fresh)
        return True
