"""One time budget per call and the retries it leaves room for.

A call's attempts and the pauses between them share one deadline, fixed when the call starts:
httpx's per-phase timeouts alone bound nothing (a server sending a byte a second never trips
a read timeout). The policy is the same for a call, a batch, a download and an upload, so it
lives apart from the sending (:mod:`kbfs.client.transport`), which says what an attempt is and
whether it may be repeated.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from kbfs.client.errors import RequestTimeout, ServerError, TransportError
from kbfs.client.wire import CALLER_MARGIN, MIN_TRANSFER_RATE, is_retryable

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryPolicy:
    """Exponential backoff with jitter within a call's budget; only idempotent calls retry."""

    #: First retry delay in seconds; doubles per attempt, with +-50% jitter.
    BACKOFF_BASE = 0.2
    BACKOFF_MAX = 5.0

    def __init__(self, timeout: float, retries: int) -> None:
        self.timeout = timeout
        self.retries = max(0, retries)

    def budget(self, transfer_bytes: int = 0) -> float:
        """Seconds one call may take in all, retries included: the timeout, plus the time
        ``transfer_bytes`` (a file's size) take at MIN_TRANSFER_RATE. Fixed when the call
        starts: bytes arriving never extend it, so a server trickling forever is cut off."""
        return self.timeout + max(0, transfer_bytes) / MIN_TRANSFER_RATE

    async def run(
        self,
        label: str,
        idempotent: bool,
        attempt: Callable[[], Awaitable[T]],
        before_retry: Callable[[], bool] | None = None,
        budget: float | None = None,
        on_deadline: Callable[[trio.CancelScope], None] | None = None,
    ) -> T:
        """``attempt()`` until it succeeds, fails for good, or the call's budget is spent.

        ``on_deadline`` gets the scope holding the budget's deadline: a download whose sink
        held it (no reader wanted more yet) moves that deadline by the time held.

        The budget bounds every attempt and every pause: when it runs out the attempt in
        flight is cancelled and RequestTimeout raised. A caller's own deadline
        (``trio.current_effective_deadline``: the mount's bound on one file operation) ends it
        CALLER_MARGIN earlier if that comes first, so the caller sees a RequestTimeout it can
        handle rather than a cancellation. A retry whose pause would end past the deadline is
        not made: the failure at hand is raised instead of waiting for a certain timeout.
        """
        now = trio.current_time()
        own = now + (self.budget() if budget is None else budget)
        deadline = min(own, trio.current_effective_deadline() - CALLER_MARGIN)
        seconds = max(0.0, deadline - now)
        attempts = 1 + (self.retries if idempotent else 0)
        n = 0
        with trio.move_on_at(deadline) as scope:
            if on_deadline is not None:
                on_deadline(scope)
            while True:
                try:
                    return await attempt()
                except (TransportError, ServerError) as exc:
                    n += 1
                    if n >= attempts or not is_retryable(exc):
                        raise
                    if before_retry is not None and not before_retry():
                        raise
                    delay = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** (n - 1))
                    delay *= random.uniform(0.5, 1.5)
                    retry_after = exc.retry_after if isinstance(exc, ServerError) else None
                    if retry_after:
                        delay = max(delay, min(float(retry_after), 30.0))
                    if trio.current_time() + delay >= deadline:
                        log.debug("%s failed (%s); no time left for a retry", label, exc)
                        raise
                    log.debug(
                        "%s failed (%s); retry %d/%d in %.2fs", label, exc, n, attempts - 1, delay
                    )
                    await trio.sleep(delay)
        assert scope.cancelled_caught
        tries = f", {n + 1} attempts" if n else ""
        if deadline < own:  # the operation's deadline came first
            what = f"the operation's {self.timeout:g} s timeout"
        else:
            what = f"{seconds:.1f} s"
        raise RequestTimeout(
            f"no complete answer within {what}{tries}", method=label, request_sent=True
        )
