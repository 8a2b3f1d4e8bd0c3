"""kbfs: Kanboard file attachments as a FUSE filesystem."""

__version__ = "0.1.0"
