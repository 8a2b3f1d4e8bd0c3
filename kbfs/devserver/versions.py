"""The Kanboard release the built-in server imitates, and what changes with it.

Self-hosted Kanboards are often years behind, and between 1.2.20 and 1.2.53 several answers of
the procedures kbfs uses changed in ways a client can lose data over. ``kbfs server
--kanboard-version V`` makes the server keep V's rules, so that kbfs is tested against each of
them. Each property is one difference, named by its first release; the numbers cite the
version comparison the rules were taken from (kanboard-api.md §12, observed on real 1.2.20, 1.2.27,
1.2.28, 1.2.40, 1.2.42 and 1.2.53 and read from each tag's source). Differences no client can
observe through the file procedures (URL hosts, ``url.public_board``) are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT", "OLDEST", "Release", "UnsupportedVersion"]

OLDEST = (1, 2, 20)
NEWEST = (1, 2, 53)


class UnsupportedVersion(ValueError):
    """A ``--kanboard-version`` outside 1.2.20 to 1.2.53, or not a release number."""


@dataclass(frozen=True)
class Release:
    """One Kanboard release's rules, as booleans the procedures and the store ask."""

    number: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> Release:
        match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
        if match is None:
            raise UnsupportedVersion(f"not a Kanboard release: {text!r} (e.g. 1.2.20)")
        number = (int(match[1]), int(match[2]), int(match[3]))
        if not OLDEST <= number <= NEWEST:
            raise UnsupportedVersion(f"Kanboard {text} is not imitated: 1.2.20 to 1.2.53 are")
        return cls(number)

    def __str__(self) -> str:
        return ".".join(map(str, self.number))

    def _since(self, *first: int) -> bool:
        return self.number >= first

    @property
    def keeps_shared_bytes(self) -> bool:
        """#1 (1.2.28): FileModel::remove keeps the stored file while another row has its path.
        Before, removing either of two same-second same-name rows deletes the bytes of both."""
        return self._since(1, 2, 28)

    @property
    def theme(self) -> bool:
        """#9 (1.2.29): user rows carry ``theme``."""
        return self._since(1, 2, 29)

    @property
    def empty_role_is_string(self) -> bool:
        """#8 (1.2.36): getProjectUserRole answers ``""`` for no role, ``null`` before."""
        return self._since(1, 2, 36)

    @property
    def etag(self) -> bool:
        """#2 (1.2.38): file rows carry ``etag`` = md5(path)."""
        return self._since(1, 2, 38)

    @property
    def refuses_missing_bytes_removal(self) -> bool:
        """#3 (1.2.42): removing a row whose stored file is missing throws: ``false``, the row
        stays. Before, the missing file is ignored and the row goes (``true``)."""
        return self._since(1, 2, 42)

    @property
    def checks_task_on_create(self) -> bool:
        """#4, #5 (1.2.47): createTaskFile checks the task and its project, and generatePath
        refuses ids <= 0 or not numeric. Before, any task id is taken (a missing one leaves an
        orphan stored file) and ``projects/0/…`` is written."""
        return self._since(1, 2, 47)

    @property
    def checks_project_files(self) -> bool:
        """#6, #7 (1.2.50): get/download/removeProjectFile act only on a file of the given
        project, and getProjectFile answers ``false`` for none. Before, project_id is only
        the permission key: a file of any project is returned, downloaded, deleted, and
        "not found" is ``null``."""
        return self._since(1, 2, 50)


DEFAULT = Release(NEWEST)
