"""Wiring: the Bolt ``AsyncApp``, the workflow behind it, the HTTP endpoint, and this replica's role.

    app, wf = build_app(config, store, token="xoxb-…", signing_secret="…")
    web = http_application(app, wf)   # aiohttp app: /slack/events and /healthz
    replica = await start_background(wf)   # leader lease, heartbeats; replica.shutdown() at exit

Several replicas of ``migrabot serve`` may share one PostgreSQL state store. Any of them
answers any request (state decides: dedup keys, the environment lock, compare-and-set moves).
What must run once runs on the leader only (:class:`Replica`): restart recovery, the
scheduler and its jobs, and the examination of runs whose owner went silent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot import scheduler
from bot.config import Config
from bot.redact import redact, register_secret
from bot.runs import recovery, scheduled
from bot.runs.registry import EXECUTORS
from bot.slack_out import POST_RATE, SlackOut, with_retries
from bot.workflow import Workflow
from handlers import register_all, request_shape
from state import runs
from state.leader import Lease
from state.store import Store

log = logging.getLogger(__name__)


class MissingSecret(Exception):
    """A Slack token or secret the chosen mode needs is not set."""


def slack_env(name: str, why: str) -> str:
    """A Slack secret from the environment (they never live in the configuration file)."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingSecret(f"{name} is not set; {why}. Export it (see README: Creating the Slack app)")
    register_secret(value)
    return value


def build_app(config: Config, store: Store, *, token: str, signing_secret: str | None,
              api_url: str | None = None, update_interval: float = 0.3,
              post_rate: float = POST_RATE) -> tuple[AsyncApp, Workflow]:
    """The Bolt app and its workflow; ``post_rate``: messages per second per channel (Slack's ~1)."""
    register_secret(token)
    register_secret(signing_secret)
    app = AsyncApp(client=_client(token, api_url), signing_secret=signing_secret,
                   request_verification_enabled=signing_secret is not None,
                   process_before_response=False, raise_error_for_unhandled_request=False)
    # the workflow's own client: it lives on the worker loop, Bolt's on the serving loop
    wf = Workflow(config, store, SlackOut(_client(token, api_url), post_rate=post_rate),
                  update_interval=update_interval,
                  executors=EXECUTORS)
    register_all(app, wf)
    return app, wf


def _client(token: str, api_url: str | None) -> AsyncWebClient:
    """A Web API client that retries connection errors and waits out 429s (``Retry-After``)."""
    client = AsyncWebClient(token=token, base_url=api_url) if api_url else AsyncWebClient(token=token)
    return with_retries(client)


def http_application(app: AsyncApp, wf: Workflow, path: str = "/slack/events") -> web.Application:
    """Slack's one endpoint (commands, interactivity, events) plus ``/healthz``."""
    web_app = app.web_app(path=path)

    @web.middleware
    async def refuse_malformed(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request no Slack could send gets a 4xx and one sentence, never a 500 and a traceback."""
        if request.method != "POST" or request.path != path:
            return await handler(request)
        wf.worker.serving_begin()  # while requests are answered, the follow-up work yields (bot.worker)
        try:
            raw = await request.read()
            parsed = _interactivity(raw, request)
            if parsed is None:
                found = request_shape.problem(raw, request.content_type, request.headers)
            else:
                found = request_shape.stamp_problem(request.headers) or request_shape.payload_problem(parsed.body)
            if found is not None:
                log.info("refused a malformed request: %s", found[1])
                return web.json_response({"error": found[1]}, status=found[0])
            if parsed is None:
                return await handler(request)
            return await to_aiohttp_response(await app.async_dispatch(parsed))
        finally:
            wf.worker.serving_end()

    web_app.middlewares.append(refuse_malformed)

    async def healthz(_request: web.Request) -> web.Response:
        state = {"backend": wf.store.dialect, "reachable": True}
        try:
            wf.store.ping()
        except Exception as exc:
            state["reachable"] = False
            return web.json_response({"ok": False, "role": wf.role, "state": state,
                                      "error": f"state database: {redact(str(exc))}"}, status=503)
        return web.json_response({"ok": True, "role": wf.role, "replica": wf.store.replica, "state": state,
                                  "environments": wf.config.environment_names(),
                                  "open_runs": runs.count_open(wf.store)})

    web_app.router.add_get("/healthz", healthz)
    return web_app


def _interactivity(raw: bytes, request: web.Request) -> AsyncBoltRequest | None:
    """Bolt's request for an interactivity payload (the one field ``payload``), or None for any other body.

    Checking the shape first parsed a click's payload twice (unquote and JSON, ~10 KB with the message
    it was on): a third of the serving thread's time under bench.ack's sustained clicks (py-spy). Here
    Bolt parses it once and the shape is checked on Bolt's result; anything Bolt cannot parse goes
    the slow way (:func:`handlers.request_shape.problem` says what is wrong).
    """
    if request.content_type != "application/x-www-form-urlencoded" or not raw.startswith(b"payload=") \
            or b"&" in raw:
        return None
    try:
        return AsyncBoltRequest(body=raw.decode("utf-8"), query=request.query_string,
                                headers=request.headers)  # type: ignore[arg-type]
    except Exception:  # not UTF-8, not JSON, not an object: the slow way names the problem
        return None


async def start_background(wf: Workflow) -> Replica:
    """What runs beside the listeners: the leader lease and heartbeats; on the leader, restart
    recovery, then the scheduler and the scheduled run starts. Returns the :class:`Replica`."""
    replica = Replica(wf, lease=wf.config.leader_lease)
    await wf.run(replica.start())
    # Everything start-up made (modules, configuration, clients: ~64,000 objects) lives as long as the
    # process: out of the collector's sight, a full collection under load takes 2 ms, not 25-50 ms
    # during which neither the acks nor the worker run (bench.ack, sustained mode, gc.callbacks).
    gc.collect()
    gc.freeze()
    return replica


class Replica:
    """This process among the replicas: its lease, its runs' heartbeats, and the leader's duties.

    Every heartbeat (a third of ``lease``), on threads of their own so a busy loop cannot starve
    them: stamp ``heartbeat_at`` on the runs this replica executes (:func:`state.runs.keep_alive`),
    and renew the leader lease.
    Gaining the lease: log it, run restart recovery for runs whose owner is silent, start the
    scheduler and restore the scheduled run starts from state. Leading: each heartbeat, examine
    runs whose owner's heartbeat is older than ``lease`` and pick up run starts scheduled on
    other replicas. Losing it: log it and stop the scheduler (its jobs stay in state).

    With SQLite state the lease always holds and recovery examines every run this process does
    not execute (there is no other process).
    """

    def __init__(self, wf: Workflow, *, lease: float = 15.0) -> None:
        self.wf = wf
        self.lease = Lease(wf.store, seconds=lease)
        self.seconds = lease
        self.interval = max(0.2, lease / 3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._duty: asyncio.Task[Any] | None = None

    @property
    def shared(self) -> bool:
        return self.wf.store.dialect != "sqlite"

    async def start(self) -> None:
        """On the worker loop: the first renewal (so a single process leads before serving), then the beat."""
        runs.keep_alive(self.wf.store, self.interval)  # this replica's runs say they are alive at its pace
        held = await asyncio.to_thread(self.lease.renew)
        if held:
            await self._gain()
        else:
            log.warning("migrabot: replica %s is a follower (another replica holds the leader lease)",
                        self.wf.store.replica)
        self._thread = threading.Thread(target=self._beat, name="migrabot-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            held = self.lease.renew()
            if self._stop.is_set():
                return
            self.wf.worker.call(self._after_beat, held)

    def _after_beat(self, held: bool) -> None:
        """On the worker loop: act on a change of role; on the leader, the periodic duties (one at a time)."""
        if self._duty is not None and not self._duty.done():
            return
        if held and self.wf.role != "leader":
            self._duty = asyncio.get_running_loop().create_task(self._gain(), name="gain-leadership")
        elif not held and self.wf.role == "leader":
            self._lose()
        elif held:
            self._duty = asyncio.get_running_loop().create_task(self._lead(), name="leader-duties")

    def _stale_before(self) -> str | None:
        if not self.shared:
            return None  # one process: every running run it does not execute was interrupted
        return (datetime.now(UTC) - timedelta(seconds=self.seconds)).isoformat(timespec="milliseconds")

    async def _gain(self) -> None:
        self.wf.role = "leader"
        log.warning("migrabot: replica %s is now the leader (scheduler, recovery)%s", self.wf.store.replica,
                    f" of the {self.wf.store.dialect} state" if self.shared else "")
        try:
            await recovery.recover(self.wf, older_than=self._stale_before())
        except Exception:
            log.exception("restart recovery failed; stale runs are examined again at the next heartbeat")
        await self._ensure_scheduler()

    async def _ensure_scheduler(self) -> None:
        """The leader's scheduler, with the run starts restored from state (again if a start failed)."""
        if self.wf.scheduler is not None and self.wf.scheduler.running:
            return
        try:
            await scheduler.start(self.wf)
            await scheduled.restore_run_starts(self.wf)
        except Exception:
            log.exception("the scheduler could not start; tried again at the next heartbeat")
            self._stop_scheduler()

    def _lose(self) -> None:
        self.wf.role = "follower"
        log.warning("migrabot: replica %s lost the leader lease: scheduler stopped, another replica takes over",
                    self.wf.store.replica)
        self._stop_scheduler()

    async def _lead(self) -> None:
        await self._ensure_scheduler()
        stale_before = self._stale_before()
        if stale_before is None:
            return  # one process: recovery at its start covered every run it does not execute
        try:
            await recovery.examine_stale(self.wf, older_than=stale_before)
            await scheduled.sync_run_starts(self.wf)
        except Exception:
            log.exception("leader duties failed; tried again at the next heartbeat")

    def _stop_scheduler(self) -> None:
        sched, self.wf.scheduler = self.wf.scheduler, None
        if sched is not None and sched.running:
            sched.shutdown(wait=False)

    def shutdown(self, wait: bool = False) -> None:
        """Stop the heartbeat, the scheduler and give the lease up (thread-safe; ``wait`` as APScheduler's)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 10)
        if self.wf.worker.here() or self.wf.worker.loop.is_closed():
            self._stop_scheduler()
        else:
            self.wf.worker.call(self._stop_scheduler)
        self.lease.release()
        self.wf.role = "follower"
