"""Small Block Kit builders, so that no handler writes dict literals.

    >>> section("*hi*")["text"]["type"]
    'mrkdwn'
    >>> button("Run", "run", "42", style="primary")["style"]
    'primary'

Every text is cut to its Block Kit limit here, so a long log never makes Slack reject a message.
"""

from __future__ import annotations

import re
from typing import Any

from actions.humanize import age, duration, size  # noqa: F401  (bk.size, bk.duration, bk.age)
from bot.redact import redact

SECTION_TEXT_LIMIT = 3000
HEADER_LIMIT = 150
BUTTON_TEXT_LIMIT = 75
OPTION_TEXT_LIMIT = 75
OPTION_VALUE_LIMIT = 150
CONTEXT_ELEMENT_LIMIT = 10
MESSAGE_BLOCK_LIMIT = 50
FIELD_LIMIT = 2000

Block = dict[str, Any]


def esc(text: object) -> str:
    """Text that did not come from our templates, made safe for ``mrkdwn``: ``&``, ``<``, ``>`` only.

    Slack reads ``<…>`` as links and mentions, so a migration comment ``-- <!channel>`` would
    notify the whole channel; Slack names exactly these three characters to escape and nothing
    else (https://api.slack.com/reference/surfaces/formatting#escaping).

    >>> esc("WHERE id < 10 AND id > 2 -- <!channel> & co")
    'WHERE id &lt; 10 AND id &gt; 2 -- &lt;!channel&gt; &amp; co'
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ticked(name: object) -> str:
    """A name from data (migration, database, backup, app) as inline code, escaped.

    >>> ticked("a<b>")
    '`a&lt;b&gt;`'
    """
    return f"`{esc(name)}`"


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
# the only mentions our own code writes into text stored with a run (error, decision): "rejected by
# <@U…>" at the start, "…, decided by <@U…>" at the end; everything else in stored text is escaped
_STORED_MENTION = re.compile(r"^((?:rejected|aborted|cancelled) by )&lt;@([UW][A-Z0-9]+)&gt;"
                             r"|(decided by )&lt;@([UW][A-Z0-9]+)&gt;$")


def stored(text: object) -> str:
    """Text stored with a run (error, decision, step detail, check reason) for ``mrkdwn``.

    It mixes our words with data (exception texts, names), so all of it is escaped, except the
    one mention our own templates put at its start or end.

    >>> stored("rejected by <@U1ALICE> <!here>")
    'rejected by <@U1ALICE> &lt;!here&gt;'
    >>> stored("fix forward, decided by <@U1BOB>")
    'fix forward, decided by <@U1BOB>'
    """
    def mention(m: re.Match[str]) -> str:
        return f"{m.group(1)}<@{m.group(2)}>" if m.group(1) else f"{m.group(3)}<@{m.group(4)}>"

    return _STORED_MENTION.sub(mention, esc(text))


def cut(text: str, limit: int, marker: str = "…") -> str:
    """``text`` shortened to ``limit`` characters, with a marker when it was cut.

    >>> cut("abcdef", 4)
    'abc…'
    """
    text = redact(text)
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def plain(text: str, limit: int = SECTION_TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": cut(text, limit) or " ", "emoji": True}


def mrkdwn(text: str, limit: int = SECTION_TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit) or " "}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, HEADER_LIMIT)}


def section(text: str, *, block_id: str | None = None, accessory: Block | None = None,
            fields: list[str] | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(text)}
    if fields:
        block["fields"] = [mrkdwn(f, FIELD_LIMIT) for f in fields[:10]]
    if block_id:
        block["block_id"] = block_id
    if accessory:
        block["accessory"] = accessory
    return block


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(t) for t in texts[:CONTEXT_ELEMENT_LIMIT]]}


def divider() -> Block:
    return {"type": "divider"}


def code(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    """Data (SQL, logs, queries) in a code block, escaped, within a section's limit once fenced.

    Slack parses ``<…>`` inside code blocks too, so the body is escaped like any data.

    >>> code("SELECT 1 WHERE a < b")
    '```SELECT 1 WHERE a &lt; b```'
    """
    body = cut(esc(redact(text).replace("```", "ˋˋˋ")), limit - 8)
    if body.endswith("…"):  # never leave half an entity (``&am…``) at the cut
        body = _PARTIAL_ENTITY.sub("", body[:-1]) + "…"
    return f"```{body}```"


def button(text: str, action_id: str, value: str, *, style: str | None = None,
           confirm: Block | None = None) -> Block:
    element: Block = {"type": "button", "text": plain(text, BUTTON_TEXT_LIMIT), "action_id": action_id,
                      "value": value}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def confirm_dialog(title: str, text: str, confirm: str = "Yes", deny: str = "Cancel") -> Block:
    return {"title": plain(title, 100), "text": mrkdwn(text, 300), "confirm": plain(confirm, 30),
            "deny": plain(deny, 30)}


def actions(elements: list[Block], *, block_id: str | None = None) -> Block:
    block: Block = {"type": "actions", "elements": elements[:25]}
    if block_id:
        block["block_id"] = block_id
    return block


def option(text: str, value: str, description: str | None = None) -> Block:
    opt: Block = {"text": mrkdwn(text, OPTION_TEXT_LIMIT) if description is None else plain(text, OPTION_TEXT_LIMIT),
                  "value": value[:OPTION_VALUE_LIMIT]}
    if description:
        opt["description"] = plain(description, OPTION_TEXT_LIMIT)
    return opt


def checkboxes(action_id: str, options: list[Block], selected: list[Block]) -> Block:
    element: Block = {"type": "checkboxes", "action_id": action_id, "options": options[:10]}
    if selected:
        element["initial_options"] = selected
    return element


def static_select(action_id: str, placeholder: str, options: list[Block],
                  initial: Block | None = None) -> Block:
    element: Block = {"type": "static_select", "action_id": action_id,
                      "placeholder": plain(placeholder, 150), "options": options[:100]}
    if initial:
        element["initial_option"] = initial
    return element


def text_input(block_id: str, action_id: str, label: str, *, placeholder: str | None = None,
               hint: str | None = None, max_length: int = 100) -> Block:
    element: Block = {"type": "plain_text_input", "action_id": action_id, "max_length": max_length}
    if placeholder:
        element["placeholder"] = plain(placeholder, 150)
    block: Block = {"type": "input", "block_id": block_id, "label": plain(label, 2000), "element": element}
    if hint:
        block["hint"] = plain(hint, 2000)
    return block


def modal(callback_id: str, title: str, blocks: list[Block], *, submit: str | None = "Submit",
          close: str = "Cancel", private_metadata: str = "", notify_on_close: bool = False) -> Block:
    view: Block = {"type": "modal", "callback_id": callback_id, "title": plain(title, 24),
                   "close": plain(close, 24), "blocks": blocks[:100], "private_metadata": private_metadata}
    if notify_on_close:
        view["notify_on_close"] = True
    if submit:
        view["submit"] = plain(submit, 24)
    return view


def fit_blocks(blocks: list[Block], limit: int = MESSAGE_BLOCK_LIMIT) -> list[Block]:
    """Keep a message within Slack's block limit, saying how much was left out."""
    if len(blocks) <= limit:
        return blocks
    kept = blocks[: limit - 1]
    return [*kept, context(f"… {len(blocks) - len(kept)} more blocks left out; details are in the thread")]


def user(user_id: str) -> str:
    """A mention of a user (``<@U123>``) or a user group (``<!subteam^S123>``)."""
    if user_id.startswith("S"):
        return f"<!subteam^{user_id}>"
    if user_id.startswith(("U", "W")):
        return f"<@{user_id}>"
    return user_id


def channel(ref: str) -> str:
    """A link to a channel: ``<#C123>`` for an id, ``#name`` (escaped) for a name from the configuration.

    >>> channel("C0DEPLOYS"), channel("#deploys")
    ('<#C0DEPLOYS>', '#deploys')
    """
    if re.fullmatch(r"[CGD][A-Z0-9]{2,}", ref):
        return f"<#{ref}>"
    return "#" + esc(ref.lstrip("#"))
