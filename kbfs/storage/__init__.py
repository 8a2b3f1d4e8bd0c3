"""Bytes on local disk: the spool (unsaved content) and the content cache (downloads)."""
