"""Built-in Kanboard-compatible JSON-RPC server for kbfs development, tests and benchmarks.

It reproduces the observed behaviour of Kanboard 1.2.53 (``docs/kanboard-api.md``) for the
procedures kbfs uses, including the awkward parts, and adds test knobs (latency, body limit, fault
injection, call statistics).  It shares no code with :mod:`kbfs.client` on purpose: a shared bug
would make both sides agree on something Kanboard does not do.
"""

from kbfs.devserver.serve import DevServer, main, start_server

__all__ = ["DevServer", "main", "start_server"]
