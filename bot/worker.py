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
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


# The serving thread waits for the GIL whenever the worker computes; Python hands it over every
# 5 ms by default. A shorter interval keeps acks quick under a burst (bench.ack).
SWITCH_INTERVAL = 0.001


class Worker:
    def __init__(self, name: str = "migrabot-worker") -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self.loop = asyncio.new_event_loop()
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

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()
