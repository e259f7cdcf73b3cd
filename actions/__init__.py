"""Everything that touches a database server or the file system. Usable without Slack."""
