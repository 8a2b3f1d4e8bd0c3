"""Talking to a running mount from outside it: ``kbfs status`` and ``kbfs clear``.

``status`` is the reading side (where mounts publish, how the commands find them) and stays
cheap to import, since the command line loads it without the filesystem layers.
``publisher`` is the mount's side (status file, control socket) and ``clearing`` what the
socket's "clear" request does; both run inside the mount process and sit above ``vfs``.
"""
