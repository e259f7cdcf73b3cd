"""migrabot as bench.ack measures it, served in a process of its own (so its RSS is its own).

Started by ``bench.ack``: reads one JSON line from stdin, ``{"token", "secret", "api_url",
"config": TOML, "base_dir", "state"}``, serves on loopback as ``migrabot serve --http`` does (the
same wiring; the leader lease and the scheduler started), prints the ``/slack/events`` URL, and
stops when stdin closes. The baseline is ``bench.ack_bare``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web

from bot.app import build_app, http_application, start_background
from bot.config import check_config_text
from state.store import open_store


async def serve(web_app: web.Application) -> tuple[str, web.AppRunner]:
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", runner


async def main() -> None:
    loop = asyncio.get_running_loop()
    spec = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    config, problems, _ = check_config_text(spec["config"], environ={}, base_dir=Path(spec["base_dir"]))
    assert config is not None, problems
    store = open_store(Path(spec["state"]))
    app, wf = build_app(config, store, token=spec["token"], signing_secret=spec["secret"], api_url=spec["api_url"])
    replica = await start_background(wf)
    url, runner = await serve(http_application(app, wf))
    print(url, flush=True)
    try:
        await loop.run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()
        await wf.run(asyncio.to_thread(replica.shutdown))
        await wf.close()
        store.close()


if __name__ == "__main__":
    asyncio.run(main())
