"""Approvals by emoji reaction on a run message; removing the reaction withdraws the vote."""

from __future__ import annotations

from typing import Any

from bot.actor import Actor
from bot.runs import controls
from bot.workflow import Workflow
from handlers.common import dedup_key
from state import runs


def register(app: Any, wf: Workflow) -> None:
    def decision_of(reaction: str) -> str | None:
        if reaction in wf.config.approve_reactions:
            return "approve"
        if reaction in wf.config.reject_reactions:
            return "reject"
        return None

    async def handle(body: dict[str, Any], event: dict[str, Any], removed: bool) -> None:
        decision = decision_of(event.get("reaction", ""))
        item = event.get("item") or {}
        if decision is None or item.get("type") != "message":
            return
        run = runs.by_message(wf.store, item.get("channel", ""), item.get("ts", ""))
        if run is None:
            return
        actor = Actor(user=event["user"], channel=item["channel"])
        key = dedup_key("event", body.get("event_id", ""))  # Slack retries an event it thinks was lost
        if removed:
            wf.spawn_once(key, controls.withdraw(wf, run["id"], actor, decision), "withdraw")
        else:
            wf.spawn_once(key, controls.vote(wf, run["id"], actor, decision, via="reaction"), "vote")

    @app.event("reaction_added")
    async def reaction_added(body: dict[str, Any], event: dict[str, Any]) -> None:
        await handle(body, event, removed=False)

    @app.event("reaction_removed")
    async def reaction_removed(body: dict[str, Any], event: dict[str, Any]) -> None:
        await handle(body, event, removed=True)
