"""`/migrate ENV` with many pending migrations: the plan and the checklist's own checks come first;
the SQL review replies follow, paced for Slack, and the review item waits for them (issue 17)."""

from __future__ import annotations

import asyncio

from tests.botstack import ALICE, CHANNEL, StackFactory, wait_for

COUNT = 300


def _many() -> dict[str, str]:
    return {f"2024010100{i:04d}_t{i}": f'CREATE TABLE "t{i}" ("id" SERIAL NOT NULL, "v" TEXT NOT NULL DEFAULT \'\');\n'
            for i in range(COUNT)}


async def test_the_checklist_checks_are_shown_before_the_sql_of_many_migrations_is_posted(
        make_stack: StackFactory) -> None:
    async with make_stack(_many()) as s:
        await s.driver.slash(ALICE, "/migrate", "staging", CHANNEL)

        def run_message():  # type: ignore[no-untyped-def]
            found = s.slack.messages(CHANNEL)
            return found[0] if found else None

        msg = await wait_for(run_message)
        await wait_for(lambda: "backup pre-flight passed" in s.text_of(s.slack.message(CHANNEL, msg.ts) or msg))
        shown = s.slack.message(CHANNEL, msg.ts) or msg
        last = f"2024010100{COUNT - 1:04d}_t{COUNT - 1}"
        # the checks are there while the SQL is still being posted (several replies, paced for Slack)
        assert not any(last in r.text or last in str(r.blocks) for r in shown.replies)
        assert "being posted in the thread" in s.text_of(shown)  # nobody ticks a review of SQL not there yet
        await wait_for(lambda: any(last in str(r.blocks) for r in (s.slack.message(CHANNEL, msg.ts) or msg).replies),
                       timeout=120)
        await s.settle()
        done = s.slack.message(CHANNEL, msg.ts) or msg
        assert "being posted in the thread" not in s.text_of(done)
        assert "read the SQL in the thread, then tick" in s.text_of(done)
        await asyncio.sleep(0)
