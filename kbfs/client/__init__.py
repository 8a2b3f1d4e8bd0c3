"""Async Kanboard JSON-RPC client (httpx on trio): projects, tasks and file attachments.

The filesystem depends on this package only through these names; see ``api.py`` for usage and
``errors.py`` for the exception tree.
"""

from kbfs.client.api import ClientStats, Credentials, KanboardClient
from kbfs.client.endpoint import normalise_endpoint
from kbfs.client.errors import (
    AuthenticationError,
    EmptyDownload,
    KanboardError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    Rejected,
    RequestTimeout,
    RpcError,
    ServerError,
    SourceError,
    TransportError,
)
from kbfs.client.models import Container, FileRecord, Kind, Project, Task, User

__all__ = [
    "AuthenticationError",
    "ClientStats",
    "Container",
    "Credentials",
    "EmptyDownload",
    "FileRecord",
    "KanboardClient",
    "KanboardError",
    "Kind",
    "NotFound",
    "PermissionDenied",
    "Project",
    "ProtocolError",
    "Rejected",
    "RequestTimeout",
    "RpcError",
    "ServerError",
    "SourceError",
    "Task",
    "TransportError",
    "User",
    "normalise_endpoint",
]
