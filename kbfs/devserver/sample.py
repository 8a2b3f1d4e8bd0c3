"""A small, realistic data set for demos and tests (``--sample-data``).

Three projects with open and closed tasks, text/markdown files and real PNG images as task and
project attachments.  It deliberately includes a few things a client must cope with: two attachments
with the same name on one task, every file with a named uploader, and a closed task with files.
Users: ``alice`` (project-member of the first two projects) and ``bob`` (project-viewer of the
first), besides the ``admin`` every new store has. Their passwords are random, returned by
:func:`seed_sample_data` for the server to print: anyone on the machine can reach the port, so a
fixed password would open the demo server to every local user.
"""

from __future__ import annotations

import secrets

from kbfs.devserver.images import make_png
from kbfs.devserver.store import Store

__all__ = ["seed_sample_data"]

_README = """# Website redesign

Goals for the new site:

- faster pages (target: < 1 s on 3G)
- accessible colours and keyboard navigation
- a blog that marketing can edit without us
"""

_ROADMAP = """Q1  research, mockups
Q2  build, content migration
Q3  launch, measure, iterate
"""


def seed_sample_data(store: Store) -> dict[str, str]:
    """Fill an empty store; ids come out as 1, 2, 3... because the store is new.

    Returns the passwords of the users it created, by name.
    """
    passwords = {name: secrets.token_urlsafe(12) for name in ("alice", "bob")}
    alice = store.create_user("alice", passwords["alice"], "Alice Martin", "alice@example.com")
    bob = store.create_user("bob", passwords["bob"], "Bob Viewer", None)
    assert alice is not None and bob is not None

    web = store.create_project("Website Redesign", "New public website", 0, "WEB")
    app = store.create_project("Mobile App", "iOS and Android client", 0, "APP")
    archive = store.create_project("Archive 2024", None, 0, "")
    assert web is not None and app is not None and archive is not None
    store.add_project_user(web, alice, "project-member")
    store.add_project_user(app, alice, "project-member")
    store.add_project_user(web, bob, "project-viewer")

    def task(project: int, title: str, closed: bool = False) -> int:
        task_id = store.create_task(project, title, description=f"{title}.")
        assert task_id is not None
        if closed:
            store.set_task_status(task_id, False)
        return task_id

    mockups = task(web, "Homepage mockups")
    audit = task(web, "Accessibility audit")
    fonts = task(web, "Choose web fonts", closed=True)
    login = task(app, "Login screen")
    push = task(app, "Push notifications")
    listing = task(app, "App store listing", closed=True)
    retro = task(archive, "Q4 retrospective", closed=True)
    task(archive, "Migrate old assets")

    text = str.encode
    # Uploaded by people, as through Kanboard's web UI (the user_id of a file sent with the
    # application API token is 0: no uploader, see kbfs.namespace.attributes).
    admin_user = store.user_by_name("admin")
    assert admin_user is not None
    admin = int(admin_user["id"])
    store.upload("task", mockups, "homepage.png", make_png(320, 200, (70, 130, 180), 20), alice)
    store.upload("task", mockups, "notes.md", text("# Mockup notes\n\nHero image left.\n"), alice)
    store.upload("task", mockups, "mobile view.png", make_png(120, 240, (60, 179, 113), 30), alice)
    store.upload("task", audit, "checklist.txt", text("[ ] contrast\n[ ] alt texts\n"), alice)
    store.upload("task", fonts, "fonts.md", text("Inter for text, Fira Code for code.\n"), alice)
    store.upload("task", login, "login-flow.png", make_png(200, 150, (218, 165, 32), 25), alice)
    store.upload("task", login, "requirements.txt", text("OAuth, biometrics, offline.\n"), alice)
    store.upload("task", push, "payload.json", text('{"title": "Hi", "badge": 1}\n'), alice)
    store.upload(
        "task", listing, "description.txt", text("The best board in your pocket.\n"), alice
    )
    # Same name twice, uploaded in different seconds so each keeps its own content (uploads of
    # one name to one task within the same second would share storage: kanboard-api §7).
    real_clock = store.clock
    store.clock = lambda: real_clock() - 3600
    try:
        store.upload("task", retro, "report.txt", text("First draft of the report.\n"), admin)
    finally:
        store.clock = real_clock
    store.upload("task", retro, "report.txt", text("Final report, reviewed.\n"), admin)
    store.upload("project", web, "README.md", text(_README), alice)
    store.upload("project", web, "logo.png", make_png(64, 64, (200, 40, 40), 8), alice)
    store.upload("project", app, "roadmap.txt", text(_ROADMAP), alice)
    store.upload("project", archive, "summary.md", text("# 2024\n\nAll done.\n"), admin)
    return passwords
