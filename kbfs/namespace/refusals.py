"""Content the server refuses for good, in the namespace: it stays where the user put it.

An image name on bytes that are not an image, a file whose whole content is ``0``, a 403:
retrying cannot help, yet the bytes are the user's. They stay visible at their name as a file
of this mount only (readable, renameable, removable) until the user renames it (which uploads
it under the new name if the server takes that) or removes it. Functions over a ``Namespace``
built from its primitives; part of the namespace package, so they may set the fields it owns.
"""

from __future__ import annotations

from kbfs.namespace.nodes import Node
from kbfs.namespace.tree import Namespace


def keep_refused(ns: Namespace, node: Node) -> bool:
    """``node``'s content was refused for good: keep it shown at its name, local only. False
    if there is nothing to keep (removed meanwhile, or its content settled)."""
    if node.discarded or node.pending is None:
        return False
    if not node.linked:
        # Lost its entry meanwhile (the version it replaces was deleted elsewhere): the
        # bytes are what the user has of this file, so they are shown again.
        ns.relink(node)
    return True
