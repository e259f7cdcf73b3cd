"""Block Kit checks: every limit Slack enforces is caught, valid payloads pass."""

from __future__ import annotations

from typing import Any

import pytest

from bot.simulator.blockkit_check import assert_valid_message, assert_valid_view, check_message, check_view


def pt(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def section(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(text: str = "Go", action_id: str = "go", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": pt(text), "action_id": action_id, **extra}


def options(n: int, text: str = "o", value: str = "v") -> list[dict[str, Any]]:
    return [{"text": pt(f"{text}{i}"), "value": f"{value}{i}"} for i in range(n)]


def modal(**extra: Any) -> dict[str, Any]:
    view = {"type": "modal", "callback_id": "cb", "title": pt("Run migration"), "submit": pt("Run"),
            "close": pt("Cancel"), "blocks": [section()]}
    view.update(extra)
    return view


def text_input(**element: Any) -> dict[str, Any]:
    return {"type": "input", "block_id": "in", "label": pt("Why"),
            "element": {"type": "plain_text_input", "action_id": "why", **element}}


VALID_MESSAGE = [
    {"type": "header", "text": pt("Deploy prod")},
    section("*2 pending*", fields=[{"type": "mrkdwn", "text": f"f{i}"} for i in range(10)]),
    {"type": "divider"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "by <@U1>"}] * 10},
    {"type": "actions", "elements": [
        button("Approve", "approve", value="x" * 2000, style="primary"),
        {"type": "checkboxes", "action_id": "targets", "options": options(10)},
        {"type": "static_select", "action_id": "when", "placeholder": pt("When"), "options": options(100)},
    ]},
    section("accessory", accessory=button("More", "more")),
]


def test_valid_message_and_view_have_no_problems() -> None:
    assert check_message(VALID_MESSAGE, "Deploy prod") == []
    assert check_message(None, "plain text only") == []
    assert check_message([section()] * 50, None) == []
    assert check_view(modal(blocks=[text_input(max_length=3000)], private_metadata="m" * 3000)) == []
    assert check_view(modal(blocks=[section()] * 100)) == []
    assert_valid_message(VALID_MESSAGE, "x")
    assert_valid_view(modal())


@pytest.mark.parametrize(
    ("blocks", "text", "expected"),
    [
        (None, None, "neither text nor blocks"),
        ([], "", "neither text nor blocks"),
        (None, "x" * 40_001, "max 40000"),
        ([section()] * 51, None, "message has 51 blocks (max 50)"),
        ([{"type": "carousel_of_doom"}], None, "unknown block type 'carousel_of_doom'"),
        ([section("x" * 3001)], None, "blocks[0].text.text is 3001 chars (max 3000)"),
        ([section(fields=[{"type": "mrkdwn", "text": "f"}] * 11)], None, "fields has 11 items (max 10)"),
        ([{"type": "header", "text": pt("h" * 151)}], None, "max 150"),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], None, "must be plain_text"),
        ([{"type": "actions", "elements": [button("b" * 76)]}], None, "max 75"),
        ([{"type": "actions", "elements": [button(value="v" * 2001)]}], None, "value is 2001 chars (max 2000)"),
        ([{"type": "actions", "elements": [button(action_id="a" * 256)]}], None, "action_id is 256 chars (max 255)"),
        ([section(block_id="b" * 256)], None, "block_id is 256 chars (max 255)"),
        ([section(block_id="same"), section(block_id="same")], None, "'same' is used twice"),
        ([{"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}], None,
         "has 26 items (max 25)"),
        ([{"type": "actions", "elements": [button(), button()]}], None, "'go' is used twice in the same block"),
        ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], None, "has 11 items (max 10)"),
        ([{"type": "actions", "elements": [{"type": "checkboxes", "action_id": "c", "options": options(11)}]}],
         None, "has 11 options (max 10)"),
        ([{"type": "actions", "elements": [{"type": "static_select", "action_id": "s", "options": options(101)}]}],
         None, "has 101 options (max 100)"),
        ([{"type": "actions", "elements": [{"type": "checkboxes", "action_id": "c",
                                            "options": options(1, text="t" * 80)}]}], None, "max 75"),
        ([{"type": "actions", "elements": [{"type": "checkboxes", "action_id": "c",
                                            "options": options(1, value="v" * 151)}]}], None, "max 150"),
        ([{"type": "actions", "elements": [{"type": "blinking_marquee", "action_id": "m"}]}], None,
         "unknown element type"),
        ([{"type": "section", "text": "a bare string"}], None, "must be a text object"),
        ([{"type": "actions", "elements": [button(style="green")]}], None, "style must be primary or danger"),
        (["not a block"], None, "must be an object"),
    ],
)
def test_message_problems_are_caught(blocks: Any, text: Any, expected: str) -> None:
    problems = check_message(blocks, text)
    assert any(expected in p for p in problems), problems
    with pytest.raises(ValueError, match="invalid message"):
        assert_valid_message(blocks, text)


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = check_message([section("x" * 3001), {"type": "header", "text": pt("h" * 151)}], "t")
    assert len(problems) == 2 and "blocks[0]" in problems[0] and "blocks[1]" in problems[1]


def test_slack_sdk_checks_are_included() -> None:
    # image blocks are left to slack_sdk: an over-long alt_text is caught by its validation only
    problems = check_message([{"type": "image", "image_url": "https://example.com/x.png", "alt_text": "a" * 2001}],
                             "t")
    assert problems and "blocks[0]" in problems[0]


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (modal(title=pt("t" * 25)), "view.title.text is 25 chars (max 24)"),
        (modal(submit=pt("s" * 25)), "view.submit.text is 25 chars (max 24)"),
        (modal(close=pt("c" * 25)), "view.close.text is 25 chars (max 24)"),
        (modal(private_metadata="m" * 3001), "private_metadata is 3001 chars (max 3000)"),
        (modal(callback_id="c" * 256), "callback_id is 256 chars (max 255)"),
        (modal(blocks=[section()] * 101), "view has 101 blocks (max 100)"),
        (modal(blocks=[]), "view has 0 blocks (min 1)"),
        (modal(blocks=[text_input(max_length=3001)]), "max_length is 3001 (must be 0..3000)"),
        (modal(blocks=[text_input()], submit=None), "no submit button"),
        (modal(blocks=[section(block_id="x"), text_input(), section(block_id="in")]), "'in' is used twice"),
        (modal(type="popup"), "view.type must be modal or home"),
        ({"type": "modal", "blocks": [section()]}, "view.title must be a text object"),
    ],
)
def test_view_problems_are_caught(view: dict[str, Any], expected: str) -> None:
    problems = check_view(view)
    assert any(expected in p for p in problems), problems
    with pytest.raises(ValueError, match="invalid view"):
        assert_valid_view(view)
