"""The blocker watch that runs beside every migration never keeps the migration from ending."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Leaves the watch 600 times at varied moments of a poll that never pauses; prints the slowest exit.
SCENARIO = textwrap.dedent("""
    import asyncio, sys, time
    import asyncpg
    from actions.blockers import BlockerWatch

    async def main(url):
        watched = await asyncpg.connect(url)
        watch = BlockerWatch(url, interval=0.0)
        slowest = 0.0
        for i in range(600):
            async with watch.watching(watched.get_server_pid()):
                await asyncio.sleep(0.001 * (i % 7))
                started = time.monotonic()
            slowest = max(slowest, time.monotonic() - started)
        await watch.close()
        await watched.close()
        print(f"{slowest:.3f}")

    asyncio.run(main(sys.argv[1]))
""")


def test_leaving_the_watch_always_ends_its_poll_at_once(database_url: str) -> None:
    """Leaving the watch at any moment of its poll returns within a second, every time.

    On Python 3.11 a cancellation landing as the poll's query returns was swallowed by
    ``asyncio.wait_for`` (python/cpython#86296): the poll went on and the migration, which
    leaves the watch after its last statement, waited for it forever (seen in CI as a deploy
    that never returned). Polling without pause and leaving at varied moments hits that window
    within a few hundred tries. A separate process, so a hang fails the test instead of hanging it.
    """
    try:
        done = subprocess.run([sys.executable, "-c", SCENARIO, database_url],
                              capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("leaving the blocker watch hung: the poll did not end") from None
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1.0, f"leaving the watch took {done.stdout.strip()} s"
