"""The server's clock, as far as its answers prove it, for uploads that must not share a second.

Kanboard names a stored file ``sha1(filename . time())``: two uploads of one name to one task
(or project) in the same server second share one storage path, and on Kanboard 1.2.27 and
older removing either row deletes the bytes of both (kanboard-api §7). So before uploading a name
that already has a record dated second S, kbfs waits until the server's clock has passed S.
The local clock cannot tell (the server's may be off by minutes); the server's answers can:
its HTTP ``Date`` header, and the ``date`` of a record it just created, are each a moment the
server's clock had reached by the time the answer arrived. The largest such lower bound, moved
on by the local monotonic clock, is what :meth:`ServerClock.now` returns: never later than the
server's real time, so a wait based on it never ends too early.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import trio

__all__ = ["ServerClock"]

# An observation this far below the current bound means the server's clock was set back:
# the bound restarts from it (an answer delayed in transit is below by its delay at most).
_STEP_BACK = 5.0


class ServerClock:
    """A lower bound of the server's clock (epoch seconds), learned from its answers."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset: float | None = None  # server time minus local monotonic time, at least
        self.waits = 0  # uploads that waited for the server's next second
        self.waited = 0.0  # seconds they spent waiting

    def observe(self, server_seconds: float) -> None:
        """The server's clock had reached ``server_seconds`` by now."""
        offset = server_seconds - self._monotonic()
        if self._offset is None or offset > self._offset or offset < self._offset - _STEP_BACK:
            self._offset = offset

    def observe_http_date(self, value: str | None) -> None:
        """An HTTP ``Date`` header of an answer just received (ignored if unreadable)."""
        if not value:
            return
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return
        self.observe(parsed.timestamp())

    def now(self) -> float | None:
        """The server's time is at least this now; None before its first answer."""
        if self._offset is None:
            return None
        return self._monotonic() + self._offset

    def passed(self, second: int) -> bool:
        """Whether the server's clock is surely past ``second`` (a record's ``date``)."""
        now = self.now()
        return now is not None and now >= second + 1

    async def wait_past(self, second: int) -> float:
        """Sleep until the server's clock is surely past ``second``; the seconds slept.

        With no answer seen yet there is no bound to move on: one second and a bit is the
        longest the server's current second can last from here.
        """
        now = self.now()
        delay = 1.05 if now is None else second + 1 - now
        if delay <= 0:
            return 0.0
        self.waits += 1
        self.waited += delay
        await trio.sleep(delay)
        return delay
