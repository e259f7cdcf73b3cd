"""What every listener needs: who acted, dedup keys, the usage answer."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from bot.actor import Actor
from bot.command_parser import USAGE, Command, UsageError, environments_hint, parse
from bot.render import messages
from bot.workflow import Workflow

Work = Callable[[Workflow, Command, Actor], Coroutine[Any, Any, Any]]


def actor_from_command(command: dict[str, Any]) -> Actor:
    return Actor(user=command["user_id"], channel=command["channel_id"],
                 channel_name=command.get("channel_name"), trigger_id=command.get("trigger_id"),
                 response_url=command.get("response_url"))


def actor_from_action(body: dict[str, Any]) -> Actor:
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    return Actor(user=body["user"]["id"], channel=channel, channel_name=(body.get("channel") or {}).get("name"),
                 trigger_id=body.get("trigger_id"), response_url=body.get("response_url"))


def shown_options(body: dict[str, Any]) -> list[str] | None:
    """The options ticked in the clicked checkboxes as the clicker's client showed them.

    Slack sends ``message`` as that client last saw it (none for an ephemeral message): its
    ``initial_options`` are what the person saw before their click. None when it is not there.
    """
    action = (body.get("actions") or [{}])[0]
    for block in (body.get("message") or {}).get("blocks") or []:
        if block.get("block_id") != action.get("block_id"):
            continue
        for element in block.get("elements") or []:
            if element.get("action_id") == action.get("action_id"):
                return [o.get("value") for o in element.get("initial_options") or []]
    return None


def dedup_key(*parts: Any) -> str:
    return ":".join(str(p) for p in parts)


def action_key(body: dict[str, Any]) -> tuple[str, ...]:
    action = (body.get("actions") or [{}])[0]
    return ("action", body["user"]["id"], action.get("action_id", ""), action.get("action_ts", ""))


def run_id_of(body: dict[str, Any]) -> int | None:
    action = (body.get("actions") or [{}])[0]
    value = action.get("value")
    if value is None:
        block_id = action.get("block_id", "")
        value = block_id.rpartition(":")[2]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def answer_usage(ack: Any, usage_text: str, problem: str | None = None) -> None:
    text, blocks = messages.usage(usage_text, problem)
    await ack(response_type="ephemeral", text=text, blocks=blocks)


def register_slash(app: Any, wf: Workflow, name: str, runners: dict[str, Work]) -> None:
    """One slash command: bad input and `help` are answered in the ack itself (only the person
    sees it, nothing else happens); every real request is handed to its runner, once."""

    async def listener(ack: Any, command: dict[str, Any]) -> None:
        usage = USAGE[name] + f"\nEnvironments: {environments_hint(wf.config)}"
        try:
            cmd = parse(name, command.get("text", ""), wf.config)
        except UsageError as exc:
            await answer_usage(ack, usage, str(exc))
            return
        if cmd.action == "help":
            await answer_usage(ack, usage)
            return
        # spawned before the ack, so the work is already tracked when Slack hears back; once per trigger
        wf.spawn_once(dedup_key("command", command.get("trigger_id", "")),
                      runners[cmd.action](wf, cmd, actor_from_command(command)), f"{name[1:]}-{cmd.action}")
        await ack()

    listener.__name__ = f"on_{name[1:]}_command"
    app.command(name)(listener)
