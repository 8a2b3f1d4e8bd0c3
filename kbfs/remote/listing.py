"""What the refresher knows about each listing: when it was fetched, whether the last refresh
failed, and the lock that shares one refresh among concurrent lookups. The records themselves
belong to the namespace (``kbfs.namespace.views``); projects and tasks are kept here."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from kbfs.client.models import Project, Task

NEVER = -1e18  # fetched_at of a listing never fetched


@dataclass(eq=False)
class Listing:
    """A cached server listing with its fetch time and a lock that shares refreshes."""

    fetched_at: float = NEVER
    used_at: float = NEVER  # last looked at (file listings: the oldest unused are dropped)
    lock: trio.Lock = field(default_factory=trio.Lock)
    failing: bool = False  # the last refresh failed: the cached listing is shown as it was

    @property
    def ever_fetched(self) -> bool:
        return self.fetched_at > NEVER / 2


@dataclass(eq=False)
class TaskList(Listing):
    tasks: dict[int, Task] = field(default_factory=dict)


@dataclass(eq=False)
class ProjectList(Listing):
    projects: dict[int, Project] = field(default_factory=dict)
    read_only: set[int] = field(default_factory=set)
