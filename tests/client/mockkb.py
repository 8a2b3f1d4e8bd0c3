"""A scriptable JSON-RPC responder for httpx.MockTransport (no sockets, no devserver).

Each method maps to a result, or to a function of the params returning the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from kbfs.client import Credentials, KanboardClient

TOKEN = "s3cr3t-T0KEN-do-not-leak-4242"
CREDS = Credentials(TOKEN)


def envelope(result: Any, rid: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": rid}


@dataclass
class MockKanboard:
    procedures: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    def on(self, method: str, result: Any) -> MockKanboard:
        self.procedures[method] = result if callable(result) else (lambda _p, r=result: r)
        return self

    def _one(self, call: dict[str, Any]) -> dict[str, Any]:
        proc = self.procedures.get(call["method"])
        if proc is None:
            return {
                "jsonrpc": "2.0",
                "error": {"code": -32601, "message": "Method not found"},
                "id": call.get("id"),
            }
        return envelope(proc(call.get("params")), call.get("id"))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        self.bodies.append(body)
        if isinstance(body, list):
            return httpx.Response(200, json=[self._one(c) for c in body])
        return httpx.Response(200, json=self._one(body))

    def client(self, credentials: Credentials = CREDS, **kw: Any) -> KanboardClient:
        kw.setdefault("retries", 3)
        return KanboardClient(
            "https://kb.test/", credentials, transport=httpx.MockTransport(self.handler), **kw
        )

    def methods(self) -> list[str]:
        out = []
        for body in self.bodies:
            for call in body if isinstance(body, list) else [body]:
                out.append(call["method"])
        return out


def client_for(handler: Callable[..., Any], **kw: Any) -> KanboardClient:
    kw.setdefault("retries", 3)
    creds = kw.pop("credentials", CREDS)
    return KanboardClient("https://kb.test/", creds, transport=httpx.MockTransport(handler), **kw)
