"""What ``kbfs status`` prints of what did not reach the server: files waiting for an upload
(an incomplete one says so), local-only files the server refused, the recovery folder."""

from __future__ import annotations

from kbfs.control.status import Found, MountEntry, format_found


def render(vfs: dict[str, object]) -> str:
    status = {"pid": 1, "started": 0.0, "user": "jsonrpc", "vfs": {"server": "kb", **vfs}}
    return format_found(Found(MountEntry("/mnt", "kbfs", "rw"), status, None), now=0.0)


def test_refused_files_are_listed_as_local_only_not_as_waiting() -> None:
    out = render(
        {
            "pending_uploads": [
                {
                    "path": "/p/1/tasks/2/fake.png",
                    "size": 12,
                    "local_only": True,
                    "refused": "not an image",
                    "spool_file": "/s/1.data",
                },
                {
                    "path": "/p/1/tasks/2/big.bin",
                    "size": 2048,
                    "local_only": False,
                    "incomplete": "incomplete: a write failed (No space left on device)",
                    "last_error": "something else",
                    "spool_file": "/s/2.data",
                },
            ],
            "recovered": [
                {
                    "path": "/p/1/tasks/2/old.bin",
                    "size": 100,
                    "reason": "incomplete: a write"
                    " failed (No space left on device); 100 bytes kept",
                    "file": "/r/old.bin",
                },
            ],
        }
    )
    assert "NOT UPLOADED: 1 file(s)" in out
    assert "big.bin  2.0 KiB  (incomplete: a write failed (No space left on device))" in out
    assert "REFUSED: 1 file(s)" in out
    assert "fake.png  12 B  (local-only: not an image)" in out
    assert "recovered  /p/1/tasks/2/old.bin  100 B  (incomplete: a write failed" in out
    assert "bytes in /r/old.bin" in out
    assert "scratch" not in out
