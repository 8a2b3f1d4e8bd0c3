"""Fault injection and call statistics for the devserver (DESIGN-GUIDE §6, HTTP level).

A fault rule says "the next N calls of method M (or of any method, ``*``) get fault K".  Rules are
consumed in the order they were added.  Statistics count HTTP requests to ``/jsonrpc.php`` and
JSON-RPC calls per method, so tests can assert how many round trips the client made.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "HTTP_FAULTS",
    "RESULT_FAULTS",
    "TIMED_FAULTS",
    "Fault",
    "FaultPlan",
    "Stats",
]

#: Faults that replace the whole HTTP answer (the call is not executed, except ``truncated``).
HTTP_FAULTS = frozenset({"http500", "html", "drop", "garbage", "truncated", "http401", "http403"})
#: Faults that replace only the faulted call's result inside a normal answer.
RESULT_FAULTS = frozenset({"false", "empty", "rpc_error"})
#: Faults that take ``delay`` seconds: ``delay`` before the call is executed, ``slow`` per byte
#: of the answer (a server, or a link, that trickles: httpx's read timeout never fires).
TIMED_FAULTS = frozenset({"delay", "slow"})
FAULT_KINDS = HTTP_FAULTS | RESULT_FAULTS | TIMED_FAULTS


@dataclass
class Fault:
    """One rule: ``count`` more calls of ``method`` get ``kind`` (``delay`` seconds for delay,
    seconds per byte of the answer for slow)."""

    method: str
    kind: str
    count: int
    delay: float = 0.0


class FaultPlan:
    """Thread-safe list of pending fault rules, plus an optional random "chaos" mode.

    Chaos gives each matching call a fault with probability ``rate``, drawn from ``kinds`` with
    a seeded generator: stress tests get reproducible misbehaviour without scripting each call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._chaos: tuple[float, list[str], frozenset[str] | None, random.Random] | None = None

    def chaos(
        self,
        rate: float,
        kinds: list[str] | None = None,
        methods: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        """Start (rate > 0) or stop (rate 0) random faults."""
        if rate <= 0:
            with self._lock:
                self._chaos = None
            return
        chosen = list(kinds or ["http500", "html", "garbage", "truncated", "drop", "rpc_error"])
        unknown = set(chosen) - (FAULT_KINDS - TIMED_FAULTS)
        if unknown or rate > 1:
            raise ValueError(f"bad chaos settings: kinds {sorted(unknown)}, rate {rate}")
        with self._lock:
            self._chaos = (
                rate,
                chosen,
                frozenset(methods) if methods else None,
                random.Random(seed),
            )

    def add(self, method: str, kind: str, count: int = 1, delay: float | None = None) -> Fault:
        """Queue a rule; raises ValueError for an unknown kind or a bad count."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if kind in TIMED_FAULTS and (delay is None or delay < 0):
            raise ValueError(f"a {kind} fault needs a non-negative 'delay'")
        rule = Fault(method, kind, int(count), float(delay or 0.0))
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every pending rule."""
        with self._lock:
            self._rules.clear()

    def take(self, method: str) -> Fault | None:
        """Consume one use of the first rule matching ``method`` (or ``*``)."""
        with self._lock:
            for rule in self._rules:
                if rule.method in (method, "*"):
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                    return rule
            if self._chaos is not None:
                rate, kinds, methods, rng = self._chaos
                if (methods is None or method in methods) and rng.random() < rate:
                    return Fault(method, rng.choice(kinds), 1)
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The rules still queued, for the control endpoint."""
        with self._lock:
            return [vars(r).copy() for r in self._rules]


class Stats:
    """Counters exposed at ``GET /_devserver/stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.http_requests = 0
        self.response_bytes = 0
        self.calls: Counter[str] = Counter()

    def count_request(self) -> None:
        """One HTTP request reached ``/jsonrpc.php``."""
        with self._lock:
            self.http_requests += 1

    def count_response(self, size: int) -> None:
        """A ``/jsonrpc.php`` answer's body left with ``size`` bytes: what a client cost."""
        with self._lock:
            self.response_bytes += size

    def count_call(self, method: str) -> None:
        """One JSON-RPC call (a batch item counts once)."""
        with self._lock:
            self.calls[method] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"http_requests": N, "response_bytes": B, "calls": {method: count}}``."""
        with self._lock:
            return {
                "http_requests": self.http_requests,
                "response_bytes": self.response_bytes,
                "calls": dict(self.calls),
            }

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.http_requests = 0
            self.response_bytes = 0
            self.calls.clear()
