"""Errors of the bot's own state, importable without loading the state code (the CLI catches them)."""

from __future__ import annotations


class StateVersionError(Exception):
    """The state file cannot be used by this migrabot; the message (one sentence) says what to do."""
