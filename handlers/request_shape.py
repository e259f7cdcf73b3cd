"""Requests that cannot be Slack's are answered 4xx before any listener sees them.

Slack sends three shapes to the one endpoint (slash commands as form fields, interactivity as a
form field ``payload`` holding a JSON object, events as a JSON object); a request that is none
of them, or lacks what every listener relies on, gets a 400 with one sentence, never a 500 and a
traceback. A timestamp that is not a number cannot be signed by Slack: 401, as Bolt answers a
bad signature.

    >>> problem(b"payload=%5B1%5D", "application/x-www-form-urlencoded", {"X-Slack-Request-Timestamp": "1"})
    (400, 'payload is not a JSON object')
    >>> problem(b"a=1", "application/x-www-form-urlencoded", {"X-Slack-Request-Timestamp": "soon"})
    (401, 'X-Slack-Request-Timestamp is not a number')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

#: What each interactivity payload must carry for the listeners (Slack's documented payloads).
NEEDS: dict[str, tuple[str, ...]] = {
    "block_actions": ("user", "actions"),
    "view_submission": ("user", "view"),
    "view_closed": ("user", "view"),
}
COMMAND_FIELDS = ("command", "user_id", "channel_id")


def problem(body: bytes, content_type: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
    """(status, reason) when the request cannot be a well-formed Slack request, else None."""
    found = stamp_problem(headers)
    if found is not None:
        return found
    if content_type.startswith("application/json"):
        data = _json(body.decode("utf-8", "replace"))
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return 400, "the JSON body is not a Slack event (an object with a type)"
        return None
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return 400, "the body is not form-encoded UTF-8"
    if "payload" in form:
        return _payload_problem(form["payload"][0])
    if "command" in form:
        missing = [f for f in COMMAND_FIELDS if not (form.get(f) or [""])[0]]
        return (400, f"the slash command lacks {', '.join(missing)}") if missing else None
    return None  # Slack's url_verification and ssl_check come as other shapes; Bolt answers those


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def stamp_problem(headers: Mapping[str, str]) -> tuple[int, str] | None:
    """(401, reason) when the request's timestamp is not a number (no Slack could have signed it)."""
    stamp = headers.get("X-Slack-Request-Timestamp")
    if stamp is not None and not stamp.strip().isdigit():
        return 401, "X-Slack-Request-Timestamp is not a number"
    return None


def _payload_problem(text: str) -> tuple[int, str] | None:
    return payload_problem(_json(text))


def payload_problem(data: Any) -> tuple[int, str] | None:
    """What :func:`problem` finds in an interactivity payload already decoded from its JSON."""
    if not isinstance(data, dict):
        return 400, "payload is not a JSON object"
    kind = data.get("type")
    if not isinstance(kind, str):
        return 400, "payload has no type"
    missing = [f for f in NEEDS.get(kind, ()) if not data.get(f)]
    if missing:
        return 400, f"the {kind} payload lacks {', '.join(missing)}"
    user = data.get("user")
    if "user" in NEEDS.get(kind, ()) and not (isinstance(user, dict) and isinstance(user.get("id"), str)):
        return 400, f"the {kind} payload has no user id"
    if kind == "block_actions" and not all(isinstance(a, dict) for a in data.get("actions") or []):
        return 400, "the block_actions payload has actions that are not objects"
    view = data.get("view")
    if "view" in NEEDS.get(kind, ()) and not (isinstance(view, dict) and isinstance(view.get("callback_id"), str)
                                             and isinstance(view.get("type"), str)):
        return 400, f"the {kind} payload's view has no type or callback_id"
    return None
