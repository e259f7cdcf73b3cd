"""The other side of bench.ack: Slack (the Web API stand-in) and the people, in a process of their own.

Started by ``bench.ack``. Prints the stand-in's base URL, reads the two bot URLs from stdin,
creates one run message through the real bot, then fires bursts of freshly signed slash
commands and button clicks at both bots and prints the response times as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

from bot.simulator.local_slack import LocalSlack
from bot.simulator.slack_requests import Answer, SlackDriver, sign_request

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
    spec = json.loads(sys.stdin.readline())
    users = {f"U0B{i:05d}": f"user{i}" for i in range(spec["n"])}
    slack = LocalSlack(users=users, channels={CHANNEL: "bench"}, bot_token=spec["token"])
    print(await slack.start(), flush=True)
    targets = json.loads(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    secret = spec["secret"]
    async with SlackDriver(targets["migrabot"], secret, slack) as driver:
        await driver.slash("U0B00000", "/migrate", "staging", CHANNEL)  # a run message to click on
        for _ in range(200):
            if any(m.blocks and m.blocks[0]["type"] == "header" for m in slack.messages(CHANNEL)):
                break
            await asyncio.sleep(0.05)
    run_ts = next(m.ts for m in slack.messages(CHANNEL) if m.blocks and m.blocks[0]["type"] == "header")
    recorder = Recorder(slack, secret)
    for u in users:
        await recorder.slash(u, "/migrate", "status staging", CHANNEL)
    commands, recorder.bodies = recorder.bodies, []
    for u in users:
        await recorder.click(u, CHANNEL, run_ts, "approve")
    payloads = {"command": commands, "click": recorder.bodies}
    out: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as http:
        async def one(url: str, body: bytes, ctype: str) -> float:
            headers = {**sign_request(secret, body, int(time.time())), "Content-Type": ctype}
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status} from {url}")
            return time.perf_counter() - started

        async def burst(url: str, bodies: list[tuple[bytes, str]]) -> list[float]:
            return list(await asyncio.gather(*(one(url, b, c) for b, c in bodies)))

        for url in targets.values():  # warm-up: Bolt's auth.test, first imports
            for bodies in payloads.values():
                await burst(url, bodies[:2])
        await asyncio.sleep(1.0)
        for _ in range(spec["rounds"]):
            for name, url in targets.items():
                for kind, bodies in payloads.items():
                    out.setdefault(f"{name}.{kind}", []).extend(await burst(url, bodies))
                    await slack.wait_idle(quiet=0.3, timeout=30)  # the bot's follow-up work is done
    await slack.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
