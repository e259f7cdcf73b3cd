"""The baseline bench.ack measures migrabot against: a bare Bolt app whose listeners only ack.

Started by ``bench.ack`` in a process of its own: reads one JSON line from stdin (``{"token",
"secret", "api_url"}``), serves on loopback the way ``bench.ack_server`` serves migrabot (aiohttp,
request signing verified), prints the ``/slack/events`` URL and stops when stdin closes. It imports
nothing of migrabot, so its RSS is a bare Bolt app's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def bare_app(app: AsyncApp) -> AsyncApp:
    """The same Bolt app with listeners that only ack."""

    @app.command("/migrate")
    async def command(ack: Any) -> None:
        await ack()

    @app.action("approve")
    async def approve(ack: Any) -> None:
        await ack()

    return app


async def main() -> None:
    loop = asyncio.get_running_loop()
    spec = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    app = AsyncApp(client=AsyncWebClient(token=spec["token"], base_url=spec["api_url"]),
                   signing_secret=spec["secret"])
    runner = web.AppRunner(bare_app(app).web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", flush=True)
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
