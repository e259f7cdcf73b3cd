"""migrabot: runs PostgreSQL schema migrations from Slack, the way the runbook says."""

__version__ = "0.1.0"
