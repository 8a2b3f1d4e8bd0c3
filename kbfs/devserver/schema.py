"""The Kanboard tables the devserver keeps and the fixed vocabulary of its data model.

The column lists give the order in which Kanboard returns raw rows: clients see it in the JSON
objects (kanboard-api §3), so it is part of the behaviour, not a detail of the SQL.
"""

from __future__ import annotations

__all__ = [
    "APP_ROLES",
    "COLORS",
    "DEFAULT_COLUMNS",
    "PROJECT_FIELDS",
    "PROJECT_ROLES",
    "SCHEMA",
    "TASK_FIELDS",
    "USER_FIELDS",
]

DEFAULT_COLUMNS = ("Backlog", "Ready", "Work in progress", "Done")
COLORS = {
    "yellow": ("Yellow", "rgb(245, 247, 196)", "rgb(223, 227, 45)"),
    "blue": ("Blue", "rgb(219, 235, 255)", "rgb(168, 207, 255)"),
    "green": ("Green", "rgb(189, 244, 203)", "rgb(74, 227, 113)"),
    "purple": ("Purple", "rgb(223, 176, 255)", "rgb(205, 133, 254)"),
    "red": ("Red", "rgb(255, 187, 187)", "rgb(255, 151, 151)"),
    "orange": ("Orange", "rgb(255, 215, 179)", "rgb(255, 172, 98)"),
    "grey": ("Grey", "rgb(238, 238, 238)", "rgb(204, 204, 204)"),
}
PROJECT_ROLES = {"project-viewer": 1, "project-member": 2, "project-manager": 3}
APP_ROLES = ("app-user", "app-manager", "app-admin")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password TEXT,
    is_ldap_user INTEGER DEFAULT 0,
    name TEXT,
    email TEXT,
    google_id TEXT,
    github_id TEXT,
    notifications_enabled INTEGER DEFAULT 0,
    timezone TEXT,
    language TEXT,
    disable_login_form INTEGER DEFAULT 0,
    twofactor_activated INTEGER DEFAULT 0,
    twofactor_secret TEXT,
    token TEXT DEFAULT '',
    notifications_filter INTEGER DEFAULT 4,
    nb_failed_login INTEGER DEFAULT 0,
    lock_expiration_date INTEGER DEFAULT 0,
    gitlab_id INTEGER,
    role TEXT NOT NULL DEFAULT 'app-user',
    is_active INTEGER DEFAULT 1,
    avatar_path TEXT,
    api_access_token TEXT,
    filter TEXT,
    theme TEXT DEFAULT 'light'
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    is_active INTEGER DEFAULT 1,
    token TEXT DEFAULT '',
    last_modified INTEGER DEFAULT 0,
    is_public INTEGER DEFAULT 0,
    is_private INTEGER DEFAULT 0,
    is_everybody_allowed INTEGER DEFAULT 0,
    default_swimlane TEXT DEFAULT 'Default swimlane',
    show_default_swimlane INTEGER DEFAULT 1,
    description TEXT,
    identifier TEXT DEFAULT '',
    start_date TEXT DEFAULT '',
    end_date TEXT DEFAULT '',
    owner_id INTEGER DEFAULT 0,
    priority_default INTEGER DEFAULT 0,
    priority_start INTEGER DEFAULT 0,
    priority_end INTEGER DEFAULT 3,
    email TEXT,
    predefined_email_subjects TEXT,
    per_swimlane_task_limits INTEGER DEFAULT 0,
    task_limit INTEGER DEFAULT 0,
    enable_global_tags INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS columns (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    position INTEGER,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS swimlanes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    position INTEGER DEFAULT 1,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS project_has_users (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT DEFAULT '',
    date_creation INTEGER,
    color_id TEXT DEFAULT 'yellow',
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    column_id INTEGER,
    owner_id INTEGER DEFAULT 0,
    position INTEGER,
    is_active INTEGER DEFAULT 1,
    date_completed INTEGER,
    score INTEGER DEFAULT 0,
    date_due INTEGER DEFAULT 0,
    category_id INTEGER DEFAULT 0,
    creator_id INTEGER DEFAULT 0,
    date_modification INTEGER,
    reference TEXT DEFAULT '',
    date_started INTEGER DEFAULT 0,
    time_spent REAL,
    time_estimated REAL,
    swimlane_id INTEGER,
    date_moved INTEGER,
    recurrence_status INTEGER DEFAULT 0,
    recurrence_trigger INTEGER DEFAULT 0,
    recurrence_factor INTEGER DEFAULT 0,
    recurrence_timeframe INTEGER DEFAULT 0,
    recurrence_basedate INTEGER DEFAULT 0,
    recurrence_parent INTEGER,
    recurrence_child INTEGER,
    priority INTEGER DEFAULT 0,
    external_provider TEXT,
    external_uri TEXT
);
CREATE TABLE IF NOT EXISTS task_has_files (
    id INTEGER PRIMARY KEY,
    name TEXT COLLATE NOCASE NOT NULL,
    path TEXT,
    is_image INTEGER DEFAULT 0,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    date INTEGER,
    user_id INTEGER,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS project_has_files (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT COLLATE NOCASE NOT NULL,
    path TEXT,
    is_image INTEGER DEFAULT 0,
    size INTEGER,
    user_id INTEGER,
    date INTEGER
);
"""

TASK_FIELDS = (
    "id, title, description, date_creation, color_id, project_id, column_id, owner_id, position, "
    "is_active, date_completed, score, date_due, category_id, creator_id, date_modification, "
    "reference, date_started, time_spent, time_estimated, swimlane_id, date_moved, "
    "recurrence_status, recurrence_trigger, recurrence_factor, recurrence_timeframe, "
    "recurrence_basedate, recurrence_parent, recurrence_child, priority, external_provider, "
    "external_uri"
)
PROJECT_FIELDS = (
    "id, name, is_active, token, last_modified, is_public, is_private, is_everybody_allowed, "
    "default_swimlane, show_default_swimlane, description, identifier, start_date, end_date, "
    "owner_id, priority_default, priority_start, priority_end, email, predefined_email_subjects, "
    "per_swimlane_task_limits, task_limit, enable_global_tags"
)
USER_FIELDS = (
    "id, username, is_ldap_user, name, email, google_id, github_id, notifications_enabled, "
    "timezone, language, disable_login_form, twofactor_activated, twofactor_secret, token, "
    "notifications_filter, nb_failed_login, lock_expiration_date, gitlab_id, role, is_active, "
    "avatar_path, api_access_token, filter, theme"
)
