"""Slack's side of bench.ack, in a process of its own: the Web API stand-in, and the payloads people send.

Started by ``bench.ack`` with one JSON line on stdin (``{"users", "token", "secret"}``); prints the
stand-in's Web API base URL, then its control URL, and serves until stdin closes. The load
generator (``bench.ack_loadgen``, another process, so that answering the bots' API calls never
delays the clock that times them) asks the control endpoint:

- ``POST run_message {"bot"}``: ``/migrate staging`` through the real bot; answers ``{"ts"}`` of
  the run message once it is posted (the message the clicks are on);
- ``POST payloads {"commands", "clicks", "ts"}``: that many ``/migrate status staging`` commands and
  ``approve`` clicks, each with its own trigger id and action time, built exactly as
  :class:`bot.simulator.slack_requests.SlackDriver` would send them (unsigned: the load generator
  signs each one as it fires it);
- ``POST wait_idle {"quiet", "timeout"}``: answers ``{"idle"}`` once no bot called the Web API for
  ``quiet`` seconds (the bot's follow-up work is done).
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from bot.simulator.local_slack import LocalSlack
from bot.simulator.slack_requests import Answer, SlackDriver

CHANNEL = "C0BENCH01"


class Recorder(SlackDriver):
    """Builds the exact payloads a SlackDriver would send, without sending them."""

    def __init__(self, slack: LocalSlack, secret: str) -> None:
        super().__init__("http://unused", secret, slack)
        self.bodies: list[tuple[bytes, str]] = []

    async def post(self, body: bytes, content_type: str, timestamp: int | None = None,
                   signature: str | None = None, headers: dict[str, str] | None = None) -> Answer:
        self.bodies.append((body, content_type))
        return Answer(200, None)


async def main() -> None:
    loop = asyncio.get_running_loop()
    spec = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    users = [f"U0B{i:05d}" for i in range(spec["users"])]
    slack = LocalSlack(users={u: f"user{i}" for i, u in enumerate(users)}, channels={CHANNEL: "bench"},
                       bot_token=spec["token"])
    recorder = Recorder(slack, spec["secret"])

    async def run_message(request: web.Request) -> web.Response:
        args = await request.json()
        async with SlackDriver(args["bot"], spec["secret"], slack) as driver:
            await driver.slash(users[0], "/migrate", "staging", CHANNEL)
        for _ in range(400):
            for m in slack.messages(CHANNEL):
                if m.blocks and m.blocks[0]["type"] == "header":
                    return web.json_response({"ts": m.ts})
            await asyncio.sleep(0.05)
        raise web.HTTPInternalServerError(text="the bot posted no run message")

    async def payloads(request: web.Request) -> web.Response:
        args = await request.json()
        recorder.bodies = []
        for i in range(args["commands"]):
            await recorder.slash(users[i % len(users)], "/migrate", "status staging", CHANNEL)
        for i in range(args["clicks"]):
            await recorder.click(users[i % len(users)], CHANNEL, args["ts"], "approve")
        out = [[body.decode(), ctype] for body, ctype in recorder.bodies]
        recorder.bodies = []
        return web.json_response(out)

    async def wait_idle(request: web.Request) -> web.Response:
        args = await request.json()
        return web.json_response({"idle": await slack.wait_idle(quiet=args["quiet"], timeout=args["timeout"])})

    api_url = await slack.start()
    control = web.Application(client_max_size=1 << 20)
    control.router.add_post("/run_message", run_message)
    control.router.add_post("/payloads", payloads)
    control.router.add_post("/wait_idle", wait_idle)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(api_url, flush=True)
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    finally:
        await runner.cleanup()
        await slack.stop()


if __name__ == "__main__":
    asyncio.run(main())
