"""Getting content to the server and keeping it until it is there: uploads, the cleanup
queue, lost creates, crash recovery and the recovery folder."""
