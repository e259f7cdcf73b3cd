"""Check Block Kit payloads against the limits real Slack enforces, before Slack does.

slack_sdk's models validate part of Block Kit when ``to_dict()`` runs, but they stop at the first
problem, accept plain strings where Slack wants text objects and skip several limits (blocks per
message, checkbox count, input ``max_length``...). This module runs slack_sdk's checks and ours and
returns *every* problem, each naming where it is (``blocks[3].elements[0].text``)::

    >>> check_message([{"type": "header", "text": {"type": "plain_text", "text": "Deploy"}}], "Deploy")
    []
    >>> check_message(None, None)
    ['message has neither text nor blocks (Slack answers no_text)']
    >>> assert_valid_view({"type": "modal", "title": {"type": "plain_text", "text": "x" * 30}, "blocks": []})
    Traceback (most recent call last):
    ...
    ValueError: invalid view: view.title.text is 30 chars (max 24); view has 0 blocks (min 1)

The fake Slack Web API (:mod:`bot.simulator.local_slack`) answers ``invalid_blocks`` / ``invalid_arguments``
when these functions find anything, so the bot's renderers are tested against the same rules.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

MESSAGE_MAX_BLOCKS = 50
VIEW_MAX_BLOCKS = 100
MESSAGE_TEXT_MAX = 40_000

# Block types Slack renders; anything else is rejected by Slack as invalid_blocks.
KNOWN_BLOCK_TYPES = frozenset(
    {"section", "divider", "image", "actions", "context", "input", "file", "call", "header", "markdown",
     "video", "rich_text", "table"}
)
ELEMENT_TYPES = frozenset(
    {"button", "checkboxes", "datepicker", "datetimepicker", "timepicker", "email_text_input", "url_text_input",
     "number_input", "plain_text_input", "rich_text_input", "file_input", "image", "overflow", "radio_buttons",
     "static_select", "external_select", "users_select", "conversations_select", "channels_select",
     "multi_static_select", "multi_external_select", "multi_users_select", "multi_conversations_select",
     "multi_channels_select", "workflow_button"}
)
INPUT_ELEMENT_TYPES = ELEMENT_TYPES - {"button", "image", "overflow", "workflow_button"}
CONTEXT_ELEMENT_TYPES = frozenset({"image", "plain_text", "mrkdwn"})
# element type -> most options Slack accepts
OPTION_LIMITS = {"checkboxes": 10, "radio_buttons": 10, "overflow": 5, "static_select": 100,
                 "multi_static_select": 100}
ID_MAX = 255


class _Checker:
    """Collects problems while walking one message or view (block_ids must be unique across it)."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.block_ids: set[str] = set()

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def max_len(self, where: str, value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.add(f"{where} is {len(value)} chars (max {limit})")

    def text_obj(self, where: str, obj: Any, limit: int, plain_only: bool = False) -> None:
        """A composition text object: ``{"type": "plain_text"|"mrkdwn", "text": "..."}``."""
        allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        if not isinstance(obj, dict):
            self.add(f"{where} must be a text object {{type, text}}, not {type(obj).__name__}")
            return
        if obj.get("type") not in allowed:
            self.add(f"{where}.type must be {' or '.join(allowed)}, not {obj.get('type')!r}")
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            self.add(f"{where}.text must be a non-empty string")
            return
        self.max_len(f"{where}.text", text, limit)

    def blocks(self, surface: str, where: str, blocks: Any, max_blocks: int, min_blocks: int = 0) -> None:
        if not isinstance(blocks, list):
            self.add(f"{where} must be a list of blocks, not {type(blocks).__name__}")
            return
        if len(blocks) > max_blocks:
            self.add(f"{surface} has {len(blocks)} blocks (max {max_blocks})")
        if len(blocks) < min_blocks:
            self.add(f"{surface} has {len(blocks)} blocks (min {min_blocks})")
        for i, block in enumerate(blocks):
            self.block(f"{where}[{i}]", block)

    def block(self, where: str, block: Any) -> None:
        if not isinstance(block, dict):
            self.add(f"{where} must be an object, not {type(block).__name__}")
            return
        kind = block.get("type")
        if kind not in KNOWN_BLOCK_TYPES:
            self.add(f"{where} has unknown block type {kind!r}")
            return
        before = len(self.problems)
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id:
                self.add(f"{where}.block_id must be a non-empty string")
            else:
                self.max_len(f"{where}.block_id", block_id, ID_MAX)
                if block_id in self.block_ids:
                    self.add(f"{where}.block_id {block_id[:60]!r} is used twice (block_ids must be unique)")
                self.block_ids.add(block_id)
        if kind == "section":
            if "text" not in block and "fields" not in block:
                self.add(f"{where} (section) needs text or fields")
            if "text" in block:
                self.text_obj(f"{where}.text", block["text"], 3000)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list):
                    self.add(f"{where}.fields must be a list")
                else:
                    if len(fields) > 10:
                        self.add(f"{where}.fields has {len(fields)} items (max 10)")
                    for j, field in enumerate(fields):
                        self.text_obj(f"{where}.fields[{j}]", field, 2000)
            if "accessory" in block:
                self.element(f"{where}.accessory", block["accessory"], set())
        elif kind == "header":
            self.text_obj(f"{where}.text", block.get("text"), 150, plain_only=True)
        elif kind == "actions":
            self.elements(f"{where}.elements", block.get("elements"), 25, ELEMENT_TYPES)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.add(f"{where}.elements must be a non-empty list")
            else:
                if len(elements) > 10:
                    self.add(f"{where}.elements has {len(elements)} items (max 10)")
                for j, element in enumerate(elements):
                    w = f"{where}.elements[{j}]"
                    if not isinstance(element, dict) or element.get("type") not in CONTEXT_ELEMENT_TYPES:
                        self.add(f"{w} must be an image, plain_text or mrkdwn element")
                    elif element["type"] != "image":
                        self.text_obj(w, element, 3000)
        elif kind == "input":
            self.text_obj(f"{where}.label", block.get("label"), 2000, plain_only=True)
            if "hint" in block:
                self.text_obj(f"{where}.hint", block["hint"], 2000, plain_only=True)
            element = block.get("element")
            if not isinstance(element, dict) or element.get("type") not in INPUT_ELEMENT_TYPES:
                kind_name = element.get("type") if isinstance(element, dict) else element
                self.add(f"{where}.element must be an input element, not {kind_name!r}")
            else:
                self.element(f"{where}.element", element, set())
        if len(self.problems) == before:
            # slack_sdk stops at the first problem, so ask it only when ours found none (no duplicates)
            self.sdk_block(where, block)

    def elements(self, where: str, elements: Any, limit: int, allowed: frozenset[str]) -> None:
        if not isinstance(elements, list) or not elements:
            self.add(f"{where} must be a non-empty list")
            return
        if len(elements) > limit:
            self.add(f"{where} has {len(elements)} items (max {limit})")
        action_ids: set[str] = set()
        for j, element in enumerate(elements):
            self.element(f"{where}[{j}]", element, action_ids, allowed)

    def element(self, where: str, element: Any, action_ids: set[str],
                allowed: frozenset[str] = ELEMENT_TYPES) -> None:
        if not isinstance(element, dict):
            self.add(f"{where} must be an object, not {type(element).__name__}")
            return
        kind = element.get("type")
        if kind not in allowed:
            self.add(f"{where} has unknown element type {kind!r}")
            return
        action_id = element.get("action_id")
        if action_id is not None:
            if not isinstance(action_id, str) or not action_id:
                self.add(f"{where}.action_id must be a non-empty string")
            else:
                self.max_len(f"{where}.action_id", action_id, ID_MAX)
                if action_id in action_ids:
                    self.add(f"{where}.action_id {action_id[:60]!r} is used twice in the same block")
                action_ids.add(action_id)
        if kind == "button":
            self.text_obj(f"{where}.text", element.get("text"), 75, plain_only=True)
            self.max_len(f"{where}.value", element.get("value"), 2000)
            self.max_len(f"{where}.url", element.get("url"), 3000)
            if element.get("style") not in (None, "primary", "danger"):
                self.add(f"{where}.style must be primary or danger, not {element.get('style')!r}")
        elif kind in ("plain_text_input", "number_input", "email_text_input", "url_text_input"):
            for key in ("max_length", "min_length"):
                value = element.get(key)
                if value is not None and (not isinstance(value, int) or not 0 <= value <= 3000):
                    self.add(f"{where}.{key} is {value!r} (must be 0..3000)")
            if "placeholder" in element:
                self.text_obj(f"{where}.placeholder", element["placeholder"], 150, plain_only=True)
        if kind in OPTION_LIMITS or "options" in element or "option_groups" in element:
            self.options(where, element, OPTION_LIMITS.get(kind, 100))
        if kind != "button" and "placeholder" in element and kind.endswith("select"):
            self.text_obj(f"{where}.placeholder", element["placeholder"], 150, plain_only=True)

    def options(self, where: str, element: dict, limit: int) -> None:
        options = element.get("options")
        groups = element.get("option_groups")
        if groups is not None:
            if not isinstance(groups, list):
                self.add(f"{where}.option_groups must be a list")
                return
            flat: list[Any] = []
            for g, group in enumerate(groups):
                if isinstance(group, dict) and isinstance(group.get("options"), list):
                    flat.extend((f"{where}.option_groups[{g}].options[{k}]", o) for k, o in enumerate(group["options"]))
                else:
                    self.add(f"{where}.option_groups[{g}] must have a list of options")
        elif not isinstance(options, list) or not options:
            self.add(f"{where}.options must be a non-empty list")
            return
        else:
            flat = [(f"{where}.options[{k}]", o) for k, o in enumerate(options)]
        if len(flat) > limit:
            self.add(f"{where} has {len(flat)} options (max {limit})")
        for w, option in flat:
            if not isinstance(option, dict):
                self.add(f"{w} must be an object")
                continue
            self.text_obj(f"{w}.text", option.get("text"), 75)
            value = option.get("value")
            if value is not None and not isinstance(value, str):
                self.add(f"{w}.value must be a string")
            self.max_len(f"{w}.value", value, 150)

    def sdk_block(self, where: str, block: dict) -> None:
        try:
            parsed = Block.parse(block)
            if parsed is not None:
                parsed.to_dict()
        except SlackObjectFormationError as exc:
            self.add(f"{where}: {exc}")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.add(f"{where} is malformed: {exc}")


def check_message(blocks: list[dict] | None, text: str | None) -> list[str]:
    """Every problem Slack would reject in a message (``chat.postMessage``/``update``/``postEphemeral``).

    ``text`` is the top-level fallback text; ``blocks`` the Block Kit blocks. Empty list = valid.
    """
    checker = _Checker()
    if text is not None and not isinstance(text, str):
        checker.add(f"text must be a string, not {type(text).__name__}")
        text = None
    if not text and not blocks:
        checker.add("message has neither text nor blocks (Slack answers no_text)")
    if text is not None and len(text) > MESSAGE_TEXT_MAX:
        checker.add(f"text is {len(text)} chars (max {MESSAGE_TEXT_MAX})")
    if blocks is not None:
        checker.blocks("message", "blocks", blocks, MESSAGE_MAX_BLOCKS)
    return checker.problems


def check_view(view: dict) -> list[str]:
    """Every problem Slack would reject in a view (``views.open``/``update``/``push``). Empty list = valid."""
    checker = _Checker()
    if not isinstance(view, dict):
        return [f"view must be an object, not {type(view).__name__}"]
    kind = view.get("type")
    if kind not in ("modal", "home"):
        checker.add(f"view.type must be modal or home, not {kind!r}")
    if kind == "modal":
        checker.text_obj("view.title", view.get("title"), 24, plain_only=True)
    for key in ("submit", "close"):
        if key in view and view[key] is not None:
            checker.text_obj(f"view.{key}", view[key], 24, plain_only=True)
    for key, limit in (("private_metadata", 3000), ("callback_id", ID_MAX), ("external_id", ID_MAX)):
        value = view.get(key)
        if value is not None and not isinstance(value, str):
            checker.add(f"view.{key} must be a string, not {type(value).__name__}")
        checker.max_len(f"view.{key}", value, limit)
    blocks = view.get("blocks")
    checker.blocks("view", "view.blocks", blocks, VIEW_MAX_BLOCKS, min_blocks=1)
    if kind == "modal" and isinstance(blocks, list) and not view.get("submit"):
        if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks):
            checker.add("view has input blocks but no submit button (Slack requires one)")
    if not checker.problems:
        # slack_sdk's view-level checks (blocks were already checked one by one above)
        try:
            View(**view).to_dict()
        except SlackObjectFormationError as exc:
            checker.add(f"view: {exc}")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            checker.add(f"view is malformed: {exc}")
    return checker.problems


def assert_valid_message(blocks: list[dict] | None, text: str | None) -> None:
    """Raise ``ValueError`` listing every problem of the message, or return quietly."""
    problems = check_message(blocks, text)
    if problems:
        raise ValueError("invalid message: " + "; ".join(problems))


def assert_valid_view(view: dict) -> None:
    """Raise ``ValueError`` listing every problem of the view, or return quietly."""
    problems = check_view(view)
    if problems:
        raise ValueError("invalid view: " + "; ".join(problems))
