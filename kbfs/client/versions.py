"""Which Kanboard rules a server follows, from its ``getVersion`` answer.

Kanboard 1.2.20 to 1.2.53 differ in ways that decide whether a client loses data: before 1.2.28
removing one of two rows that share a storage path deletes the bytes of both; before 1.2.50 the
project-file procedures act on a file of any project; before 1.2.47 ``createTaskFile`` accepts a
task of another project. ``getVersion`` says which release it is in several forms (``1.2.20``,
``v1.2.53`` from the Docker images, ``master.<sha>`` / ``main.<sha>`` from untagged archives,
anything from ``APP_VERSION``). A form that names no release gets the oldest rules: assuming a
newer server than the real one is what loses data, assuming an older one only costs a check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["OLDEST", "ServerRules", "parse_version"]

_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)\.(\d+)")

#: The oldest release kbfs supports, whose rules an unknown version gets.
OLDEST = (1, 2, 20)


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``(1, 2, 20)`` from ``1.2.20`` or ``v1.2.20`` (a suffix is ignored); None otherwise.

    ``master.*`` and ``main.*`` are untagged builds: the release is unknown (``master`` is
    1.2.22 or older), so they get None like any other form.
    """
    if not isinstance(text, str):
        return None
    match = _RELEASE.match(text)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class ServerRules:
    """What kbfs assumes of one server: each field is a behaviour and its first release."""

    version: str
    release: tuple[int, int, int] | None

    @classmethod
    def of(cls, version: str | None) -> ServerRules:
        return cls(version or "unknown", parse_version(version))

    def _since(self, *first: int) -> bool:
        return self.release is not None and self.release >= first

    @property
    def keeps_shared_bytes(self) -> bool:
        """Removing a row keeps the stored bytes while another row has the same path (1.2.28)."""
        return self._since(1, 2, 28)

    @property
    def has_etag(self) -> bool:
        """File rows carry ``etag`` = md5(path) (1.2.38); ``path`` is there on every version."""
        return self._since(1, 2, 38)

    @property
    def refuses_missing_bytes_removal(self) -> bool:
        """A row whose stored bytes are missing cannot be removed: ``false`` (1.2.42)."""
        return self._since(1, 2, 42)

    @property
    def checks_task_on_create(self) -> bool:
        """``createTaskFile`` checks the task exists and belongs to the project (1.2.47)."""
        return self._since(1, 2, 47)

    @property
    def checks_project_files(self) -> bool:
        """get/download/removeProjectFile act only on a file of the given project (1.2.50)."""
        return self._since(1, 2, 50)

    def describe(self) -> list[str]:
        """The rules in force, one line each (``kbfs status``)."""
        known = (
            f"Kanboard {'.'.join(map(str, self.release))}"
            if self.release
            else f"an unknown release ({self.version!r}): the oldest rules (1.2.20) apply"
        )
        return [
            known,
            "removal keeps bytes another row shares"
            if self.keeps_shared_bytes
            else "removal deletes bytes another row shares: never removes a row sharing a path",
            "etag in file rows" if self.has_etag else "no etag: versions told apart by path",
            "a file whose stored bytes are missing cannot be removed"
            if self.refuses_missing_bytes_removal
            else "a file whose stored bytes are missing is removed",
            "createTaskFile checks the task"
            if self.checks_task_on_create
            else "createTaskFile does not check the task: checked with getTask first",
            "project-file procedures check the project"
            if self.checks_project_files
            else "project-file procedures ignore the project: each removal checked first",
        ]
