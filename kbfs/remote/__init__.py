"""What the server says exists: listings of projects, tasks and attachments."""
