"""Buttons and checkboxes on run messages: approve, reject, tick, run, abort, re-check, incident."""

from __future__ import annotations

from typing import Any

from bot.runs import controls, migrate, rehearse, resolve, rollback
from bot.workflow import Workflow
from handlers.common import action_key, actor_from_action, dedup_key, run_id_of, shown_options


def register(app: Any, wf: Workflow) -> None:
    def on(action_id: str, work: Any) -> None:
        async def listener(ack: Any, body: dict[str, Any]) -> None:
            run_id = run_id_of(body)
            if run_id is not None:  # once per click, decided on the worker loop (the ack waits for no database)
                wf.spawn_once(dedup_key(*action_key(body)), work(wf, run_id, actor_from_action(body), body),
                              f"{action_id}-{run_id}")
            await ack()

        listener.__name__ = f"on_{action_id}"
        app.action(action_id)(listener)

    on("approve", lambda wf, rid, actor, body: controls.vote(wf, rid, actor, "approve", via="button"))
    on("reject", lambda wf, rid, actor, body: controls.vote(wf, rid, actor, "reject", via="button"))
    on("run", lambda wf, rid, actor, body: controls.press_run(wf, rid, actor))
    on("abort", lambda wf, rid, actor, body: controls.abort(wf, rid, actor))
    on("recheck", lambda wf, rid, actor, body: migrate.recheck(wf, rid, actor))
    on("rehearse", lambda wf, rid, actor, body: rehearse.rehearse_for_run(wf, rid, actor))
    on("checklist", lambda wf, rid, actor, body: migrate.tick(
        wf, rid, actor, [o["value"] for o in body["actions"][0].get("selected_options") or []],
        shown_options(body)))
    on("choose_backup", lambda wf, rid, actor, body: rollback.choose_backup(
        wf, rid, actor, body["actions"][0]["selected_option"]["value"]))
    on("incident_fix_forward", lambda wf, rid, actor, body: migrate.fix_forward(wf, rid, actor))

    on("incident_rollback", lambda wf, rid, actor, body: rollback.from_incident(wf, rid, actor))
    on("incident_mark_rolled_back", lambda wf, rid, actor, body: resolve.from_incident(wf, rid, actor))
