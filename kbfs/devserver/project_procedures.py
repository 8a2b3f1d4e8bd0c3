"""JSON-RPC procedures of the application, users, projects and tasks (kanboard-api §2, §10).

Each function is one Kanboard procedure: its parameters are the PHP signature, its checks are
Kanboard's project-level authorization, and its result keeps Kanboard's ``false``/``null`` habits.
"""

from __future__ import annotations

from typing import Any

from kbfs.devserver.php import sql_id, to_php_string
from kbfs.devserver.registry import MANAGER, MEMBER, VIEWER, Call, ProcedureTable
from kbfs.devserver.schema import COLORS
from kbfs.devserver.versions import DEFAULT

__all__ = ["BASE_URL", "PROCEDURES", "VERSION"]

#: getVersion's answer: the Kanboard release we imitate, tagged so nobody mistakes us for it.
VERSION_SUFFIX = "-kbfs-devserver"
VERSION = "1.2.53" + VERSION_SUFFIX
BASE_URL = "http://localhost/"  # Kanboard with an empty application_url

PROCEDURES = ProcedureTable()


def _project_out(project: dict[str, Any] | None) -> dict[str, Any] | None:
    if project is None:
        return None
    pid = project["id"]
    out = dict(project)
    out["url"] = {
        "board": f"{BASE_URL}?controller=BoardViewController&action=show&project_id={pid}",
        "list": f"{BASE_URL}?controller=TaskListController&action=show&project_id={pid}",
    }
    return out


def _task_out(task: dict[str, Any] | None) -> dict[str, Any] | None:
    if task is None:
        return None
    out = dict(task)
    out["url"] = f"{BASE_URL}?controller=TaskViewController&action=show&task_id={task['id']}"
    name, background, border = COLORS.get(task["color_id"], COLORS["yellow"])
    out["color"] = {"name": name, "background": background, "border": border}
    return out


# Application


@PROCEDURES.procedure("getVersion")
def get_version(call: Call) -> str:
    release = call.store.release
    return VERSION if release == DEFAULT else f"{release}{VERSION_SUFFIX}"


def _user_out(call: Call, user: dict[str, Any] | None) -> Any:
    """A user row; without ``theme`` before 1.2.29 (#9)."""
    if user is None or call.store.release.theme:
        return user
    return {k: v for k, v in user.items() if k != "theme"}


@PROCEDURES.procedure("getMe", user_only=True)
def get_me(call: Call) -> Any:
    return _user_out(call, call.user)


@PROCEDURES.procedure("getMyProjects", user_only=True)
def get_my_projects(call: Call) -> Any:
    return [_project_out(p) for p in call.store.projects(call.store.user_project_ids(call.user_id))]


@PROCEDURES.procedure("getMyProjectsList", user_only=True)
def get_my_projects_list(call: Call) -> Any:
    ids = call.store.user_project_ids(call.user_id, active_only=True)
    listing = {str(p["id"]): p["name"] for p in call.store.projects(ids)}
    return listing or []


# Users


@PROCEDURES.procedure("createUser", app_role="app-admin")
def create_user(
    call: Call,
    username: Any,
    password: Any,
    name: Any = "",
    email: Any = "",
    role: Any = "app-user",
) -> Any:
    if not isinstance(username, str) or not isinstance(password, str) or len(password) < 6:
        return False
    user_id = call.store.create_user(
        username, password, to_php_string(name) or None, to_php_string(email) or None, str(role)
    )
    return user_id if user_id is not None else False


@PROCEDURES.procedure("getUser", app_role="app-admin")
def get_user(call: Call, user_id: Any) -> Any:
    ident = sql_id(user_id)
    return _user_out(call, call.store.user_by_id(ident) if ident is not None else None)


# Projects


@PROCEDURES.procedure("getAllProjects", app_role="app-admin")
def get_all_projects(call: Call) -> Any:
    return [_project_out(p) for p in call.store.projects()]


@PROCEDURES.procedure("getProjectById")
def get_project_by_id(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    return _project_out(call.store.project(sql_id(project_id)))


@PROCEDURES.procedure("getProjectByName")
def get_project_by_name(call: Call, name: Any) -> Any:
    found = [p for p in call.store.projects() if p["name"] == name]
    project = found[0] if found else None
    call.require_project(project["id"] if project else None, VIEWER)
    return _project_out(project)


@PROCEDURES.procedure("createProject", app_role="app-manager")
def create_project(
    call: Call,
    name: Any,
    description: Any = None,
    owner_id: Any = 0,
    identifier: Any = None,
    start_date: Any = None,
    end_date: Any = None,
    priority_default: Any = None,
    priority_start: Any = None,
    priority_end: Any = None,
    email: Any = None,
) -> Any:
    if not isinstance(name, str) or not name:
        return False
    owner = sql_id(owner_id) or 0
    if call.user is not None and not owner:
        owner = call.user_id
    project_id = call.store.create_project(
        name,
        None if description is None else to_php_string(description),
        owner,
        to_php_string(identifier or ""),
        to_php_string(start_date or ""),
        to_php_string(end_date or ""),
        None if email is None else to_php_string(email),
        manager_id=call.user_id,
    )
    return project_id if project_id is not None else False


@PROCEDURES.procedure("removeProject")
def remove_project(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.remove_project(sql_id(project_id))


@PROCEDURES.procedure("enableProject")
def enable_project(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.set_project_active(sql_id(project_id), True)


@PROCEDURES.procedure("disableProject")
def disable_project(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.set_project_active(sql_id(project_id), False)


@PROCEDURES.procedure("addProjectUser")
def add_project_user(
    call: Call, project_id: Any, user_id: Any, role: Any = "project-member"
) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.add_project_user(sql_id(project_id), sql_id(user_id), str(role))


@PROCEDURES.procedure("getProjectUserRole")
def get_project_user_role(call: Call, project_id: Any, user_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    ident = sql_id(user_id)
    role = call.store.project_role(sql_id(project_id), ident) if ident is not None else ""
    return role if role or call.store.release.empty_role_is_string else None  # #8


# Tasks


@PROCEDURES.procedure("getAllTasks")
def get_all_tasks(call: Call, project_id: Any, status_id: Any = 1) -> Any:
    call.require_project(project_id, VIEWER)
    return [_task_out(t) for t in call.store.tasks(sql_id(project_id), sql_id(status_id) or 0)]


@PROCEDURES.procedure("getTask")
def get_task(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, VIEWER)
    return _task_out(call.store.task(sql_id(task_id)))


@PROCEDURES.procedure("createTask")
def create_task(
    call: Call,
    title: Any,
    project_id: Any,
    color_id: Any = "",
    column_id: Any = 0,
    owner_id: Any = 0,
    creator_id: Any = 0,
    date_due: Any = "",
    description: Any = "",
    category_id: Any = 0,
    score: Any = 0,
    swimlane_id: Any = None,
    priority: Any = 0,
    recurrence_status: Any = 0,
    recurrence_trigger: Any = 0,
    recurrence_factor: Any = 0,
    recurrence_timeframe: Any = 0,
    recurrence_basedate: Any = 0,
    reference: Any = "",
    tags: Any = None,
    date_started: Any = "",
    time_spent: Any = None,
    time_estimated: Any = None,
) -> Any:
    call.require_project(project_id, MEMBER)
    if not isinstance(title, str) or not title:
        return False
    creator = sql_id(creator_id) or call.user_id
    task_id = call.store.create_task(
        sql_id(project_id),
        title,
        color_id=str(color_id or ""),
        column_id=sql_id(column_id) or 0,
        owner_id=sql_id(owner_id) or 0,
        creator_id=creator,
        description=to_php_string(description) if not isinstance(description, list) else "",
        reference=to_php_string(reference) if not isinstance(reference, list) else "",
        swimlane_id=sql_id(swimlane_id),
        score=sql_id(score) or 0,
        priority=sql_id(priority) or 0,
        category_id=sql_id(category_id) or 0,
    )
    return task_id if task_id is not None else False


@PROCEDURES.procedure("openTask")
def open_task(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.set_task_status(sql_id(task_id), True)


@PROCEDURES.procedure("closeTask")
def close_task(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.set_task_status(sql_id(task_id), False)


@PROCEDURES.procedure("removeTask")
def remove_task(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.remove_task(sql_id(task_id))


@PROCEDURES.procedure("moveTaskToProject")
def move_task_to_project(
    call: Call,
    task_id: Any,
    project_id: Any,
    swimlane_id: Any = None,
    column_id: Any = None,
    category_id: Any = None,
    owner_id: Any = None,
) -> Any:
    call.require_task(task_id, MEMBER)
    call.require_project(project_id, MEMBER)
    return call.store.move_task(sql_id(task_id), sql_id(project_id))


@PROCEDURES.procedure("duplicateTaskToProject")
def duplicate_task_to_project(
    call: Call,
    task_id: Any,
    project_id: Any,
    swimlane_id: Any = None,
    column_id: Any = None,
    category_id: Any = None,
    owner_id: Any = None,
) -> Any:
    call.require_task(task_id, MEMBER)
    call.require_project(project_id, MEMBER)
    new_id = call.store.duplicate_task(sql_id(task_id), sql_id(project_id))
    return new_id if new_id is not None else False
