"""Scheduled runs and the scheduler's jobs, end to end: real HTTP, the Slack stand-in, real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot import scheduler
from bot.runs import scheduled
from state import runs
from state import schedules as rows
from tests.botstack import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    GROUP,
    BotStack,
    StackFactory,
    applied,
    bot_stack,
)


@asynccontextmanager
async def running_scheduler(s: BotStack, **kw: Any) -> AsyncIterator[Any]:
    """What ``bot.app.start_background`` starts with the app (the test stack does not)."""
    sched = await s.wf.run(scheduler.start(s.wf, **kw))  # on the workflow's worker loop, as the app does
    await s.wf.run(scheduled.restore_run_starts(s.wf))

    async def shutdown() -> None:
        sched.shutdown(wait=False)

    try:
        yield sched
    finally:
        await s.wf.run(shutdown())


async def wait_status(s: BotStack, run_id: int, statuses: tuple[str, ...], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := runs.get(s.store, run_id)["status"]) not in statuses:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is still {status}")
        await asyncio.sleep(0.05)
    await s.settle()
    return status


def run_id_of(s: BotStack) -> int:
    run = runs.by_message(s.store, CHANNEL, s.last_run_message().ts)
    assert run is not None
    return int(run["id"])


def thread_text(s: BotStack) -> str:
    msg = s.last_run_message()
    return "\n".join(r.text or "" for r in msg.replies)


async def test_a_scheduled_run_fires_at_its_time(make_stack: StackFactory) -> None:
    async with make_stack() as s, running_scheduler(s):
        await s.slash(ALICE, "staging in 4s")
        run_id = run_id_of(s)
        text = s.text_of(s.last_run_message())
        assert "Scheduled for" in text and "(UTC)>." in text and "Cancel schedule" in text
        assert runs.get(s.store, run_id)["status"] == "scheduled"  # type: ignore[index]
        await s.tick_all(ALICE)
        assert await wait_status(s, run_id, ("succeeded", "failed")) == "succeeded"
        assert "Succeeded" in s.text_of(s.last_run_message())
        assert "Scheduled start: run #" in thread_text(s)
        assert rows.get(s.store, f"run-{run_id}")["status"] == "fired"  # type: ignore[index]
        assert len(await applied(s.config.environment("staging").database_url)) == 2
        assert s.all_payloads_valid() == []


async def test_abort_cancels_the_schedule_and_nothing_runs(make_stack: StackFactory) -> None:
    async with make_stack() as s, running_scheduler(s) as sched:
        await s.slash(ALICE, "staging in 1h")
        run_id = run_id_of(s)
        assert sched.get_job(scheduler.run_start_job_id(f"run-{run_id}")) is not None
        await s.slash(ALICE, "schedule")
        listing = s.ephemerals_for(ALICE)[-1]
        assert f"run #{run_id} on *staging*" in listing and "in 59m" in listing
        await s.click(ALICE, "abort")
        assert "Aborted" in s.text_of(s.last_run_message())
        assert sched.get_job(scheduler.run_start_job_id(f"run-{run_id}")) is None
        assert rows.get(s.store, f"run-{run_id}")["status"] == "cancelled"  # type: ignore[index]
        # a late job would do nothing
        assert await s.wf.run(scheduled.fire_run(s.wf, f"run-{run_id}")) == "cancelled"
        assert await applied(s.config.environment("staging").database_url) == []
        await s.slash(ALICE, "schedule")
        assert "No scheduled runs" in s.ephemerals_for(ALICE)[-1]


async def test_a_scheduled_prod_run_missing_an_approval_does_not_run(make_stack: StackFactory) -> None:
    async with make_stack() as s, running_scheduler(s):
        await s.slash(BOB, "prod in 1h")
        run_id = run_id_of(s)
        msg = s.last_run_message()
        assert "Needs the typed confirmation *before* its time" in s.text_of(msg)
        assert "approve" in s.action_ids(msg), "a scheduled run can be approved before its time"
        await s.tick_all(BOB)
        await s.click(CAROL, "approve")
        # Confirm now: the typed confirmation is recorded ahead, it does not start the run
        await s.click(BOB, "run")
        (view,) = s.slack.open_views(BOB)
        await s.driver.submit_view(BOB, view.id, {"confirm_input": {"value": "prod"}})
        await s.settle()
        assert "Typed confirmation recorded by <@U0BOB>" in s.text_of(s.last_run_message())
        assert runs.get(s.store, run_id)["status"] == "scheduled"  # type: ignore[index]

        # its time comes (the job calls exactly this)
        assert await s.wf.run(scheduled.fire_run(s.wf, f"run-{run_id}")) == "blocked"
        await s.settle()
        assert runs.get(s.store, run_id)["status"] == "awaiting"  # type: ignore[index]
        said = thread_text(s)
        assert "did not happen: not ready" in said and "approvals 1/2" in said
        assert "typed confirmation" not in said.split("Missing:")[1]  # that one was recorded
        assert rows.get(s.store, f"run-{run_id}")["status"] == "blocked"  # type: ignore[index]
        assert await applied(s.config.environment("prod").database_url) == []
        assert s.all_payloads_valid() == []


async def test_a_schedule_survives_a_restart_and_a_long_outage_expires_it(make_stack: StackFactory) -> None:
    async with make_stack() as s, running_scheduler(s):
        await s.slash(ALICE, "staging in 3s")
        await s.tick_all(ALICE)
        run_id = run_id_of(s)
        config, slack = s.config, s.slack
    # a new bot process on the same state file, same channel history
    async with bot_stack(config) as s2:
        s2.slack._channel_msgs, s2.slack._by_ts = slack._channel_msgs, slack._by_ts
        async with running_scheduler(s2):
            assert await wait_status(s2, run_id, ("succeeded", "failed")) == "succeeded"
        assert len(await applied(config.environment("staging").database_url)) == 2

        # a run whose time passed long before the bot came back does not start late
        await s2.slash(ALICE, "prod in 1h")
        prod_run = run_id_of(s2)
        row = rows.get(s2.store, f"run-{prod_run}")
        later = datetime.fromisoformat(row["run_at"]) + timedelta(hours=2)  # type: ignore[index]
        await s2.wf.run(scheduled.restore_run_starts(s2.wf, now=later))
        await s2.settle()
        assert runs.get(s2.store, prod_run)["status"] == "expired"  # type: ignore[index]
        assert "did not start 2h 0m late" in s2.text_of(s2.last_run_message())
        await s2.slash(BOB, "prod")  # the lock was released
        assert runs.get(s2.store, run_id_of(s2))["status"] == "awaiting"  # type: ignore[index]


async def test_approval_reminder_once_and_recurring_jobs(make_stack: StackFactory, tmp_path: Path) -> None:
    # drift_check off: its shadow database would make the request itself last longer than the 1 s reminder
    async with make_stack(approval_reminder='"1s"', approval_expiry='"2h"', report_cron='"0 9 * * 1-5"',
                          retention="{ keep_last = 3 }", drift_check="false") as s, running_scheduler(s) as sched:
        assert {j.id for j in sched.get_jobs()} >= {"sweep", "report:prod", "retention:prod"}
        await s.slash(BOB, "prod")
        run_id = run_id_of(s)
        assert "Approvals count for 2h 0m." in s.text_of(s.last_run_message())
        now = datetime.now(UTC)
        assert await s.wf.run(scheduler.remind_approvals(s.wf, run_id, now=now)) is False  # not waited long enough
        assert await s.wf.run(scheduler.remind_approvals(s.wf, run_id, now=now + timedelta(seconds=5))) is True
        assert await s.wf.run(scheduler.remind_approvals(s.wf, run_id, now=now + timedelta(seconds=60))) is False
        (reminder,) = [r for r in s.last_run_message().replies if ":bell:" in (r.text or "")]
        assert f"<@{BOB}>" in reminder.text and f"<!subteam^{GROUP}>" in reminder.text
        assert "approvals (0/2)" in reminder.text

        # an approval older than approval_expiry stops counting; the sweep re-renders the message to say so
        await s.click(CAROL, "approve")
        assert "Approvals* (1/2)" in s.text_of(s.last_run_message())
        three_hours_ago = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
        s.store.db.execute("UPDATE approvals SET at = ? WHERE run_id = ?", [three_hours_ago, run_id])
        await s.wf.run(scheduler.sweep(s.wf, since=datetime.now(UTC) - timedelta(hours=2)))
        await s.settle()
        text = s.text_of(s.last_run_message())
        assert "Approvals* (0/2)" in text and f"<@{CAROL}>'s approval expired: approve again" in text

        # the daily report goes to the environment's channel
        assert await s.wf.run(scheduler.post_daily_report(s.wf, s.config.environment("prod")))
        assert "Database report: prod" in s.slack.messages(CHANNEL)[-1].text
        # retention runs on the configured rules (nothing to prune here)
        assert await s.wf.run(scheduler.prune_backups(s.wf, s.config.environment("prod"))) == []
        await s.slash(ALICE, "schedule")
        assert "report to the channel at `0 9 * * 1-5`" in s.ephemerals_for(ALICE)[-1]
        assert s.all_payloads_valid() == []
