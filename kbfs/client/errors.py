"""The client's exception tree.

The client knows nothing about errno or FUSE; the filesystem maps these classes to errno in
one table (``kbfs.errors``). Catch the base classes::

    KanboardError
    ├── TransportError          the request did not complete (refused, reset, timeout, DNS)
    │   └── RequestTimeout      no answer within the timeout
    ├── ServerError             HTTP 5xx, empty body, HTML error page, non-JSON answer
    ├── ProtocolError           JSON, but not the shape the procedure answers with
    ├── AuthenticationError     HTTP 401: wrong token, password, user, or a locked account
    ├── PermissionDenied        HTTP 403: the user's project role does not allow the call
    ├── NotFound                "not found" answers: false, null, "", [] (kanboard-api §4)
    │   └── EmptyDownload       download*File answered "": missing, not allowed or a storage error
    ├── Rejected                create*File answered false: empty content, content "0", no such task
    ├── RpcError                a JSON-RPC error object (code, message, data)
    └── SourceError             create_file's local source failed or ended before ``size`` bytes

``TransportError.request_sent`` tells whether the request may have reached the server: a create
whose answer was lost after sending may have created the file, so it must not be blindly re-sent.
No message built here contains the API token.
"""

from __future__ import annotations

from typing import Any


class KanboardError(Exception):
    """Base of every error the Kanboard client raises."""

    def __init__(self, message: str, *, method: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method

    def __str__(self) -> str:
        if self.method:
            return f"{self.method}: {self.message}"
        return self.message


class TransportError(KanboardError):
    """The HTTP exchange failed: connection refused or reset, DNS, TLS, timeout."""

    def __init__(
        self, message: str, *, method: str | None = None, request_sent: bool = False
    ) -> None:
        super().__init__(message, method=method)
        self.request_sent = request_sent


class RequestTimeout(TransportError):
    """No complete answer within the configured timeout."""


class ServerError(KanboardError):
    """The server failed: HTTP 5xx, an empty body, an HTML page or any non-JSON answer."""

    #: Seconds from an HTTP Retry-After header, if the server sent one.
    retry_after: float | None = None

    def __init__(
        self, message: str, *, method: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message, method=method)
        self.status_code = status_code


class ProtocolError(KanboardError):
    """The answer is JSON but not the shape this procedure answers with."""


class AuthenticationError(KanboardError):
    """HTTP 401: the credentials were refused (or the user is locked out)."""


class PermissionDenied(KanboardError):
    """HTTP 403: the call is not allowed for this user (Kanboard never says why)."""


class NotFound(KanboardError):
    """The procedure answered its 'nothing here' value (false, null, '' or [])."""


class EmptyDownload(NotFound):
    """download*File answered '': the file is gone, not this project's, or storage failed."""


class Rejected(KanboardError):
    """create*File answered false: empty content, content "0", or no such task/project."""


class RpcError(KanboardError):
    """A JSON-RPC error object: invalid params, method not found, a PHP exception..."""

    def __init__(
        self, code: int, message: str, data: Any = None, *, method: str | None = None
    ) -> None:
        text = f"JSON-RPC error {code}: {message}"
        if data is not None:
            text += f" ({data})"
        super().__init__(text, method=method)
        self.code = code
        self.rpc_message = message
        self.data = data


class SourceError(KanboardError):
    """The local source of an upload failed or ended early; the request was abandoned mid-body.

    Kanboard reads the whole body before acting, so an abandoned upload created nothing.
    """
