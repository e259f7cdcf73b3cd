"""A second event loop, in its own thread, for the work that follows an ``ack()``.

Slack wants an answer within 3 s, and a burst of commands must not wait behind the
database and Slack API work of the ones before it. Listeners run on the serving loop and
only hand coroutines over; the workflow runs them here.

    worker = Worker()
    result = await worker.run(some_coroutine())   # from any loop
    worker.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


# The serving thread waits for the GIL whenever the worker computes; Python hands it over every
# 5 ms by default. A shorter interval keeps acks quick under a burst (bench.ack).
SWITCH_INTERVAL = 0.001
#: Acks first. While the serving loop answers requests (and for GRACE seconds after the last one:
#: a burst's requests arrive over a few ms), the worker loop stops every TICK seconds and sleeps,
#: its thread off the CPU and the GIL free, at most PAUSE seconds at a time; so the follow-up work
#: still gets at least TICK / (TICK + PAUSE) of the time under any load, and all of it when idle.
#: Without this, under sustained bursts the follow-up work took 70 % of a core in the same process
#: as the acks and ack p99 was 3-7x a bare Bolt app's (bench.ack, sustained mode).
TICK = 0.001
PAUSE = 0.050
GRACE = 0.020


class Worker:
    def __init__(self, name: str = "migrabot-worker") -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self.loop = asyncio.new_event_loop()
        # hand-overs from other threads, run in order by one wake-up of the loop (see post)
        self._inbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._woken = False
        #: requests the serving loop is answering now (serving_begin / serving_end, on the serving thread)
        self.serving = 0
        self._idle = threading.Event()
        self._idle.set()
        self._quiet_since = 0.0
        self._ticking = False
        self._tick_lock = threading.Lock()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def here(self) -> bool:
        """True when called from the worker's own loop."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker loop and wait for it from the caller's loop."""
        if self.here():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def call(self, func: Any, *args: Any) -> None:
        """Call ``func(*args)`` soon on the worker loop (thread-safe)."""
        if self.here():
            func(*args)
        else:
            self.loop.call_soon_threadsafe(func, *args)

    def post(self, func: Callable[..., Any], *args: Any) -> None:
        """Like :meth:`call`, for hand-overs in bursts: one wake-up of the worker loop runs every
        hand-over queued by then, in order (each wake-up is a write to the loop's self-pipe, and on
        the serving thread every system call is a chance for the worker to take the GIL)."""
        if self.here():
            func(*args)
            return
        self._inbox.append((func, args))  # deque.append is atomic
        if not self._woken:
            self._woken = True
            self.loop.call_soon_threadsafe(self._run_inbox)

    def _run_inbox(self) -> None:
        self._woken = False  # before draining: a hand-over appended from now on is seen here or wakes again
        while self._inbox:
            func, args = self._inbox.popleft()
            try:
                func(*args)
            except Exception as exc:  # as the loop treats a failing callback: logged, the rest still run
                self.loop.call_exception_handler({"message": f"hand-over {func!r} failed", "exception": exc})

    def serving_begin(self) -> None:
        """The serving thread started answering a request: the worker loop yields until it is done."""
        self.serving += 1
        if self.serving == 1 and not self.loop.is_closed():
            self._idle.clear()
            with self._tick_lock:
                start, self._ticking = not self._ticking, True
            if start:
                self.post(self._tick)

    def serving_end(self) -> None:
        self.serving -= 1
        if self.serving == 0:
            self._quiet_since = time.monotonic()
            self._idle.set()

    def _yielding(self) -> bool:
        """True while requests are in flight, or were less than GRACE seconds ago (more may follow)."""
        return bool(self.serving) or time.monotonic() - self._quiet_since < GRACE

    def _tick(self) -> None:
        """On the worker loop, every TICK while the serving loop is busy: sleep (the GIL free) until it
        has been quiet for GRACE, at most PAUSE; stops ticking once it is."""
        deadline = time.monotonic() + PAUSE
        while (left := deadline - time.monotonic()) > 0:
            if self.serving:
                self._idle.wait(left)
                continue
            quiet = time.monotonic() - self._quiet_since
            if quiet >= GRACE:
                break
            time.sleep(min(GRACE - quiet, left))
        with self._tick_lock:
            if not self._yielding():
                self._ticking = False
                return
        self.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()
