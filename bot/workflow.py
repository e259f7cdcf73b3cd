"""The workflow service the Slack handlers hand over to.

It owns the configuration, the state store and the Slack sender, keeps track of the
background work started after an ``ack()``, and re-renders run messages from state
(coalesced, so a burst of progress events becomes one ``chat.update``).

All of that runs on a :class:`~bot.worker.Worker` loop of its own: listeners on the serving
loop call :meth:`Workflow.spawn` and return, so acks never queue behind database work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from bot.config import Config, Environment
from bot.render.messages import slack_delayed as delayed_note
from bot.render.run_message import render_run
from bot.rules.approval_policy import approver_ids
from bot.rules.run_view import RunView, load_run_view
from bot.slack_out import Posted, SlackOut
from bot.worker import Worker
from state import audit, dedup, runs
from state.runs import Run
from state.store import Store

if TYPE_CHECKING:  # for the annotation only: the CLI never loads APScheduler
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)
#: How many Slack requests' follow-up works run at once on the worker loop; the others wait their
#: turn, in order, as unstarted coroutines (a few hundred bytes each). Without a bound, sustained
#: bursts started every one at once: hundreds of database connections, TLS contexts and HTTP calls
#: alive together (RSS 110-122 MB after 4,000 requests against 46 MB for a bare Bolt app), all
#: competing with the acks for the GIL and the CPU (ack p99 3-7x a bare app's; bench.ack, sustained).
REQUEST_SLOTS = 6
#: ... and how many while the serving loop is answering requests (``worker.serving`` > 0): acks come
#: first; the follow-up work goes on at a trickle meanwhile (it never stops), at full pace once idle.
BUSY_SLOTS = 1
#: How often (seconds) waiting requests look again whether the serving loop is idle.
RECHECK = 0.005
#: A follow-up work that is still running after this many seconds gives its slot up (it goes on):
#: a rehearsal or a long plan never holds the queue behind it.
SLOT_HOLD = 2.0
#: What starts a run of one kind: ``execute(wf, run_id, user)`` (see bot/runs/registry.py).
Executor = Callable[["Workflow", int, str], Coroutine[Any, Any, None]]


class Workflow:
    def __init__(self, config: Config, store: Store, slack: SlackOut, *, update_interval: float = 0.3,
                 executors: Mapping[str, Executor] | None = None) -> None:
        self.config = config
        self.store = store
        self.slack = slack
        self.update_interval = update_interval
        self.executors: Mapping[str, Executor] = executors or {}
        self.scheduler: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty: set[int] = set()
        self._updaters: dict[int, asyncio.Task[Any]] = {}
        # this process's own executor tasks, for draining at a stop; who executes a run is in state
        # (runs.owner, set by the move to running), which every replica reads
        self.executing: dict[int, asyncio.Task[Any]] = {}
        #: "leader" while this replica holds the leader lease (see bot.app.Replica), else "follower"
        self.role = "follower"
        self.worker = Worker()
        self._waiting: deque[tuple[str, Coroutine[Any, Any, Any], str]] = deque()  # requests not started yet
        self._in_slots = 0
        self._recheck: asyncio.TimerHandle | None = None
        self._delays_told: dict[int, int] = {}  # run id -> 429s already reported in its thread

    # --- background work -------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "work") -> asyncio.Task[Any] | None:
        """Run ``coro`` on the worker loop; its failure is logged, never lost silently.

        Returns the task when called on the worker loop (the caller may keep it), else None.
        """
        if not self.worker.here():
            self.worker.call(self.spawn, coro, name)
            return None
        task = asyncio.get_running_loop().create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def spawn_once(self, key: str, coro: Coroutine[Any, Any, Any], name: str = "work") -> None:
        """Like :meth:`spawn`, for a Slack request: ``coro`` runs only the first time ``key`` is seen.

        The de-duplication key is written on the worker loop, not before the ack: the ack never
        waits for the state database (a round trip to PostgreSQL, under a burst, on every request),
        and a retry or a double click, on this replica or another, still acts once.
        Requests take their turn: at most :data:`REQUEST_SLOTS` run at once, in arrival order.
        """
        self.worker.post(self._enqueue, key, coro, name)

    def _enqueue(self, key: str, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._waiting.append((key, coro, name))
        self._next_requests()

    def _next_requests(self) -> None:
        """On the worker loop: start waiting requests while a slot is free."""
        while self._waiting:
            if self._in_slots >= (BUSY_SLOTS if self.worker.serving else REQUEST_SLOTS):
                if self.worker.serving and self._in_slots < REQUEST_SLOTS and self._recheck is None:
                    self._recheck = asyncio.get_running_loop().call_later(RECHECK, self._recheck_serving)
                return
            key, coro, name = self._waiting.popleft()
            task = self.spawn(self._once(key, coro), name)
            assert task is not None  # on the worker loop
            self._in_slots += 1
            self._hold_slot(task)

    def _recheck_serving(self) -> None:
        self._recheck = None
        self._next_requests()

    def _hold_slot(self, task: asyncio.Task[Any]) -> None:
        """``task`` holds a slot until it ends or :data:`SLOT_HOLD` seconds pass, whichever comes first."""
        def free(_: object = None) -> None:
            if timer.cancelled():
                return
            timer.cancel()
            self._in_slots -= 1
            self._next_requests()

        timer = task.get_loop().call_later(SLOT_HOLD, free)
        task.add_done_callback(free)

    async def _once(self, key: str, coro: Coroutine[Any, Any, Any]) -> Any:
        if not dedup.first_time(self.store, key):
            coro.close()  # a retry: never started, so nothing to cancel
            return None
        return await coro

    def busy(self, name: str) -> bool:
        """True while a background task called ``name`` is still running in this process."""
        return any(t.get_name() == name and not t.done() for t in self._tasks)

    def execute(self, kind: str, run_id: int, user: str) -> None:
        """Start the executor of ``kind`` for a run that just moved to running (tracked in ``executing``).

        The move to running recorded this replica as the run's owner; its heartbeat keeps the
        claim fresh (:class:`bot.app.Replica`), so no other replica examines the run meanwhile.
        """
        task = self.spawn(self.executors[kind](self, run_id, user), name=f"run-{run_id}")
        if task is not None:
            self.executing[run_id] = task

    async def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the worker loop and wait for its result, from any loop."""
        return await self.worker.run(coro)

    async def _guard(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background work %s failed", name)
            return None

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until every background task and pending message update has finished."""
        if not self.worker.here():
            await self.worker.run(self.settle(timeout))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = [t for t in (*self._tasks, *self._updaters.values()) if not t.done()]
            if not pending and not self._waiting:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(pending) + len(self._waiting)} background task(s) still running")
            if not pending:
                await asyncio.sleep(0.01)  # requests waiting for their turn (bot.worker yields to acks)
                continue
            await asyncio.wait(pending, timeout=remaining)

    async def drain(self, grace: float) -> list[int]:
        """Before stopping: ask running runs to stop at their next safe point and wait for them.

        A migration is never cut off half-way by a redeploy: abort is requested (honoured
        between migrations) and the executing runs get ``grace`` seconds to finish. Returns the
        ids of runs still executing after that (they will be examined after the restart).
        """
        if not self.worker.here():
            return await self.worker.run(self.drain(grace))
        for run_id in list(self.executing):
            runs.update(self.store, run_id, abort_requested=1)
            self.audit("bot", "abort", run=runs.get(self.store, run_id), detail="the bot is stopping")
            self.refresh(run_id)
        pending = [t for t in self.executing.values() if t is not None and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        left = [rid for rid, t in self.executing.items() if t is not None and not t.done()]
        if not left:
            try:  # the final messages of the runs that stopped
                await self.settle(timeout=10)
            except TimeoutError:
                log.warning("stopping before every message update was sent")
        return left

    async def close(self) -> None:
        """Cancel what is still running, close the Slack session, stop the worker thread."""
        if self.worker.loop.is_closed():
            return
        if not self.worker.here():
            await self.worker.run(self.close())
            self.worker.stop()
            return
        if self._recheck is not None:
            self._recheck.cancel()
        while self._waiting:
            self._waiting.popleft()[1].close()  # never started: nothing to cancel
        for task in list(self._tasks) + list(self._updaters.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._updaters.values(), return_exceptions=True)
        await self.slack.close()

    # --- people ------------------------------------------------------------------------------

    def env(self, name: str | None) -> Environment:
        """The environment by name or alias; KeyError when there is none (the parser checked it)."""
        env = self.config.environment(name) if name is not None else None
        if env is None:
            raise KeyError(name)
        return env

    async def members(self, env: Environment) -> set[str]:
        """Every user who counts as an approver of ``env`` (user groups resolved)."""
        users, groups = approver_ids(env)
        members = set(users)
        for group in groups:
            members |= await self.slack.group_members(group)
        return members

    def audit(self, user: str | None, action: str, *, run: Run | None = None,
              env: str | None = None, detail: str = "") -> None:
        if run is None:
            audit.record(self.store, user, action, env=env, detail=detail)
            return
        audit.record(self.store, user, action, env=env or run["env"], run_id=run["id"], detail=detail,
                     channel=run["channel"], message_ts=run.get("message_ts"))

    # --- rendering ---------------------------------------------------------------------------

    async def view(self, run_id: int) -> RunView | None:
        run = runs.get(self.store, run_id)
        if run is None:
            return None
        env = self.config.environment(run["env"])
        if env is None:
            return None
        return load_run_view(self.store, env, run_id, await self.members(env))

    def refresh(self, run_id: int) -> None:
        """Ask for the run message to be re-rendered soon (coalesced)."""
        if not self.worker.here():
            self.worker.call(self.refresh, run_id)
            return
        self._dirty.add(run_id)
        task = self._updaters.get(run_id)
        if task is None or task.done():
            self._updaters[run_id] = asyncio.get_running_loop().create_task(
                self._update_loop(run_id), name=f"update-{run_id}")

    async def _update_loop(self, run_id: int) -> None:
        while run_id in self._dirty:
            self._dirty.discard(run_id)
            try:
                await self.render_now(run_id)
            except Exception:
                log.exception("cannot update the message of run %s", run_id)
            await asyncio.sleep(self.update_interval)

    async def render_now(self, run_id: int) -> None:
        view = await self.view(run_id)
        ts = view.run.get("message_ts") if view is not None else None
        if view is None or not ts:
            return
        text, blocks = render_run(view)
        await self.slack.update(view.run["channel"], ts, text, blocks)

    async def post_run_message(self, run_id: int) -> Posted:
        """Post the run message where the run lives; from then on the run holds the channel *id*
        Slack answered with (the configuration may name the channel: ``chat.update`` needs the id)."""
        view = await self.view(run_id)
        if view is None:
            return Posted(error="no such run")
        text, blocks = render_run(view)
        posted = await self.slack.post_message(view.run["channel"], text, blocks)
        if posted.ts:
            runs.update(self.store, run_id, message_ts=posted.ts, channel=posted.channel or view.run["channel"])
        return posted

    async def note_delays(self, run_id: int) -> None:
        """Say in the run's thread when Slack's rate limits delayed its messages since the last note.

        Waits for the run message's pending update first, so a closing note counts its retries too.
        """
        updater = self._updaters.get(run_id)
        if updater is not None and updater is not asyncio.current_task():
            await asyncio.wait([updater], timeout=60)
        run = runs.get(self.store, run_id)
        if run is None or not run.get("message_ts"):
            return
        count, waited = self.slack.delayed(run["channel"])
        if count > self._delays_told.get(run_id, 0):
            self._delays_told[run_id] = count
            await self.reply(run, *delayed_note(count, waited))

    async def reply(self, run: Run, text: str, blocks: list[dict[str, Any]] | None = None, *,
                    broadcast: bool = False) -> str | None:
        """A reply in the run's thread (details: SQL, retries, blockers, logs)."""
        if not run.get("message_ts"):
            return None
        return await self.slack.post(run["channel"], text, blocks, thread_ts=run["message_ts"],
                                     broadcast=broadcast)
