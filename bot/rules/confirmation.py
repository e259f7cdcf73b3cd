"""The typed confirmation: which word a run needs typed before it starts, and whether it was typed.

    >>> from bot.rules.kinds import KINDS
    >>> confirm_word(KINDS["rollback"], None)
    'RESTORE'
    >>> confirmation_error(KINDS["rollback"], None, "restore")
    'type RESTORE exactly: capital letters, no spaces'
    >>> confirmation_error(KINDS["rollback"], None, "RESTORE") is None
    True
"""

from __future__ import annotations

from actions.restore import CONFIRM_WORD
from bot.config import Environment
from bot.rules.kinds import Kind, Typed


def confirm_word(kind: Kind, env: Environment | None) -> str | None:
    """The word to type: RESTORE for a restore, the environment's name where it asks for one, else None."""
    if kind.typed is Typed.RESTORE:
        return CONFIRM_WORD
    if kind.typed is Typed.ENV and env is not None and env.confirm_by_typing:
        return env.name
    return None


def confirmation_error(kind: Kind, env: Environment | None, typed: str | None) -> str | None:
    """None when ``typed`` is right (or nothing needs typing), else what to type, in one sentence."""
    word = confirm_word(kind, env)
    if word is None or (typed or "") == word:
        return None
    if word == CONFIRM_WORD:
        return f"type {CONFIRM_WORD} exactly: capital letters, no spaces"
    return f"type the environment name exactly: {word}"
