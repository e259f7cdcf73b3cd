"""The one exception type actions raise for problems a person can act on."""

from __future__ import annotations

from bot.redact import redact


class ActionError(Exception):
    """A failure explained in one sentence, with what to do next; safe to show as it is.

    The message is redacted on construction, so a password in a URL never leaks
    through ``str(error)``.

    >>> str(ActionError("cannot reach postgres://u:pw@db/x"))
    'cannot reach postgres://u:***@db/x'
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.message = redact(message)
        self.code = code
        super().__init__(self.message)
