"""`/db` and the Terminate button of `/db blockers`: parse, answer bad input at once, hand over, ``ack()``."""

from __future__ import annotations

from typing import Any

from bot import monitoring
from bot.runs import terminate
from bot.workflow import Workflow
from handlers.common import Work, action_key, actor_from_action, dedup_key, register_slash

RUNNERS: dict[str, Work] = {
    "report": lambda wf, cmd, actor: monitoring.post_report(wf, wf.env(cmd.env), actor),
    "health": lambda wf, cmd, actor: monitoring.post_health(wf, wf.env(cmd.env), actor),
    "blockers": lambda wf, cmd, actor: monitoring.post_blockers(wf, wf.env(cmd.env), actor),
    "drift": lambda wf, cmd, actor: monitoring.post_drift(wf, wf.env(cmd.env), actor),
}


def terminate_target(value: str | None) -> tuple[str, int] | None:
    """The button's value ``ENV:PID``.

    >>> terminate_target("prod:4242"), terminate_target("nonsense")
    (('prod', 4242), None)
    """
    env, _, pid = (value or "").rpartition(":")
    return (env, int(pid)) if env and pid.isdigit() else None


def register(app: Any, wf: Workflow) -> None:
    register_slash(app, wf, "/db", RUNNERS)

    @app.action("terminate_blocker")
    async def on_terminate(ack: Any, body: dict[str, Any]) -> None:
        target = terminate_target((body.get("actions") or [{}])[0].get("value"))
        env = wf.config.environment(target[0]) if target else None
        if env is not None and target:  # once per click, decided on the worker loop: the ack does not wait
            wf.spawn_once(dedup_key(*action_key(body)), terminate.request_terminate(wf, env, target[1],
                                                                                    actor_from_action(body)),
                          f"terminate-{target[1]}")
        await ack()
