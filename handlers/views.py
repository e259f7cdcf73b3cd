"""Modal submissions: typed confirmations (environment name, RESTORE) checked before the modal closes."""

from __future__ import annotations

import json
from typing import Any

from bot.actor import Actor
from bot.render.messages import CONFIRM_ACTION, CONFIRM_BLOCK
from bot.runs import controls
from bot.workflow import Workflow
from handlers.common import dedup_key
from state import runs


def typed_value(view: dict[str, Any]) -> str | None:
    return (view.get("state", {}).get("values", {}).get(CONFIRM_BLOCK, {}).get(CONFIRM_ACTION, {}) or {}).get("value")


def register(app: Any, wf: Workflow) -> None:
    @app.view("confirm_run")
    async def confirm_run(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            run_id = int(meta["run_id"])
        except (ValueError, KeyError, TypeError):
            await ack(response_action="errors", errors={CONFIRM_BLOCK: "this confirmation is broken; press Run again"})
            return
        error = controls.check_typed(wf, run_id, typed_value(view))
        if error:
            await ack(response_action="errors", errors={CONFIRM_BLOCK: error})
            return
        run = runs.get(wf.store, run_id)
        if run is not None:  # once per view (a double submit starts nothing more), decided after the ack
            actor = Actor(user=body["user"]["id"], channel=run["channel"])
            wf.spawn_once(dedup_key("view", view.get("id", ""), "submitted"), controls.start(wf, run_id, actor),
                          f"start-{run_id}")
        await ack()

    @app.view_closed("confirm_run")
    async def confirm_closed(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        try:
            run_id = int(json.loads(view.get("private_metadata") or "{}")["run_id"])
        except (ValueError, KeyError, TypeError):
            return
        run = runs.get(wf.store, run_id)
        if run is not None:
            wf.spawn_once(dedup_key("view", view.get("id", ""), "closed"),
                          controls.dismiss(wf, run_id, Actor(user=body["user"]["id"], channel=run["channel"])),
                          f"cancel-{run_id}")
