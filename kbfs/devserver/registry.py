"""What a JSON-RPC procedure is and what it sees when it runs (kanboard-api §2, §4).

The procedure modules (:mod:`kbfs.devserver.project_procedures`,
:mod:`kbfs.devserver.file_procedures`) declare their procedures here as plain Python functions;
the dispatcher (:mod:`kbfs.devserver.rpc`) looks them up, authorizes and binds the arguments.  Both
sides share these few types, so they live below both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kbfs.devserver.php import sql_id
from kbfs.devserver.schema import PROJECT_ROLES
from kbfs.devserver.store import Store

__all__ = [
    "MANAGER",
    "MEMBER",
    "VIEWER",
    "Call",
    "Denied",
    "Procedure",
    "ProcedureTable",
    "RpcError",
]

VIEWER, MEMBER, MANAGER = "project-viewer", "project-member", "project-manager"
_ROLE_RANK = {"": 0, **PROJECT_ROLES}
_APP_RANK = {"app-user": 1, "app-manager": 2, "app-admin": 3}


class RpcError(Exception):
    """A JSON-RPC error object in the answer of one call (the rest of a batch goes on)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def error(self) -> dict[str, Any]:
        """The ``error`` member of the response object."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class Denied(Exception):
    """AuthenticationFailure / AccessDenied: escapes batches and becomes the whole answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Procedure:
    """One registered procedure; its Python signature (after ``call``) is the PHP signature."""

    name: str
    fn: Callable[..., Any]
    params: list[tuple[str, bool, Any]]  # (name, has_default, default)
    app_role: str = "app-user"
    user_only: bool = False

    @property
    def required(self) -> int:
        """How many parameters have no default."""
        return sum(1 for _, has_default, _ in self.params if not has_default)

    def authorize(self, user: dict[str, Any] | None) -> None:
        """The app-level check Kanboard runs before binding arguments (403 escapes the batch)."""
        if user is None:
            if self.user_only:
                raise Denied(403)
        elif _APP_RANK.get(user["role"], 0) < _APP_RANK[self.app_role]:
            raise Denied(403)

    def bind(self, params: Any) -> list[Any]:
        """ProcedureHandler::getArguments: count first, then positional or by name."""
        if not params:
            params = {}
        count = len(params)
        if count < self.required:
            raise RpcError(-32602, "Invalid params", "Wrong number of arguments")
        if count > len(self.params):
            raise RpcError(-32602, "Invalid params", "Too many arguments")
        if isinstance(params, dict) and list(params) == [str(i) for i in range(count)]:
            params = list(params.values())  # PHP turns numeric string keys into a list
        if isinstance(params, list):
            return params + [default for _, _, default in self.params[count:]]
        args = []
        for name, has_default, default in self.params:
            if name in params:
                args.append(params[name])
            elif has_default:
                args.append(default)
            else:
                raise RpcError(-32602, "Invalid params", f"Missing argument: {name}")
        return args


class ProcedureTable(dict[str, Procedure]):
    """Procedures by method name; :meth:`procedure` is the decorator that fills it."""

    def procedure(
        self, name: str, *, app_role: str = "app-user", user_only: bool = False
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``fn`` under the Kanboard method ``name`` with its access rules."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            params = []
            for p in list(inspect.signature(fn).parameters.values())[1:]:
                has_default = p.default is not inspect.Parameter.empty
                params.append((p.name, has_default, p.default if has_default else None))
            self[name] = Procedure(name, fn, params, app_role, user_only)
            return fn

        return register


@dataclass
class Call:
    """What a procedure sees: the store and who is calling (``user`` None = the app token)."""

    store: Store
    user: dict[str, Any] | None

    @property
    def user_id(self) -> int:
        """The caller's user id, 0 for the app token."""
        return int(self.user["id"]) if self.user else 0

    def require_project(self, project_id: Any, minimum: str) -> None:
        """ProjectAuthorization: only under user auth; unknown projects resolve to 403."""
        if self.user is None:
            return
        pid = sql_id(project_id)
        role = self.store.project_role(pid, self.user_id) if pid and pid > 0 else ""
        if _ROLE_RANK[role] < _ROLE_RANK[minimum]:
            raise Denied(403)

    def require_task(self, task_id: Any, minimum: str) -> None:
        """TaskAuthorization: task → project."""
        if self.user is not None:
            self.require_project(self.store.task_project_id(sql_id(task_id)), minimum)

    def require_task_file(self, file_id: Any, minimum: str) -> None:
        """TaskFileAuthorization: file → task → project."""
        if self.user is not None:
            self.require_project(self.store.task_file_project_id(sql_id(file_id)), minimum)
