"""The people's side of bench.ack: fires freshly signed requests at both bots and times the answers.

Started by ``bench.ack`` with one JSON line on stdin: ``{"secret", "slack" (the control URL of
``bench.ack_slack``), "targets": {"migrabot": URL, "bare": URL}, "n", "rounds", "sustained",
"sustained_rounds"}``. It runs in a process of its own, apart from Slack's stand-in (which answers
the bots' Web API calls) and from the bots, so the clock that times the answers waits for nothing else.

Two modes, each against both bots:

- **burst**: ``n`` concurrent ``/migrate status staging`` commands, then ``n`` concurrent
  ``approve`` clicks, and after each burst a wait until the bot's follow-up work is done;
- **sustained**: ``sustained`` commands and ``sustained`` clicks, interleaved, fired in bursts of
  ``n`` one after the other with no wait (the next burst leaves as soon as the last one is
  answered), while the bot's follow-up work piles up behind; repeated ``sustained_rounds`` times.

Writes JSON lines to stdout: ``{"mark": NAME}`` at the moments the bench samples the servers'
memory (it answers on stdin before the load generator goes on), then
``{"results": {KEY: [seconds…]}, "drain": {BOT: [seconds…]}}`` with KEY ``mode.bot.kind``;
``drain``: per sustained round, how long after the last ack the bot still called Slack (its
follow-up work, finishing).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bot.simulator.slack_requests import sign_request

Payload = tuple[str, str, str]  # kind, body, content type


async def main() -> None:
    loop = asyncio.get_running_loop()

    async def readline() -> str:
        return await loop.run_in_executor(None, sys.stdin.readline)

    spec = json.loads(await readline())
    secret, targets, n = spec["secret"], spec["targets"], spec["n"]
    out: dict[str, list[float]] = {}
    drain: dict[str, list[float]] = {}  # seconds from the last ack of a sustained round to the bot's last API call

    async def mark(name: str) -> None:
        print(json.dumps({"mark": name}), flush=True)
        await readline()  # the bench has sampled

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        async def control(op: str, **args: Any) -> Any:
            async with http.post(spec["slack"] + op, json=args) as r:
                r.raise_for_status()
                return await r.json()

        async def wait_idle(quiet: float = 0.3, timeout: float = 60) -> None:
            await control("wait_idle", quiet=quiet, timeout=timeout)

        async def payloads(commands: int, clicks: int) -> list[Payload]:
            bodies = await control("payloads", commands=commands, clicks=clicks, ts=run_ts)
            cmds = [("command", b, c) for b, c in bodies[:commands]]
            clks = [("click", b, c) for b, c in bodies[commands:]]
            mixed: list[Payload] = []
            for i in range(max(len(cmds), len(clks))):  # interleaved: command, click, command, …
                mixed.extend(cmds[i:i + 1] + clks[i:i + 1])
            return mixed

        async def one(url: str, body: str, ctype: str) -> float:
            data = body.encode()
            headers = {**sign_request(secret, data, int(time.time())), "Content-Type": ctype}
            started = time.perf_counter()
            async with http.post(url, data=data, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status} from {url}")
            return time.perf_counter() - started

        async def burst(url: str, batch: list[Payload], mode: str, name: str) -> None:
            times = await asyncio.gather(*(one(url, body, ctype) for _, body, ctype in batch))
            for (kind, _, _), t in zip(batch, times, strict=True):
                out.setdefault(f"{mode}.{name}.{kind}", []).append(t)

        run_ts = (await control("run_message", bot=targets["migrabot"]))["ts"]
        await wait_idle()
        for url in targets.values():  # warm-up: Bolt's auth.test, first imports, connections
            await burst(url, await payloads(2, 2), "warmup", "x")
        await wait_idle()
        await asyncio.sleep(1.0)
        await mark("idle")

        for _ in range(spec["rounds"]):
            for name, url in targets.items():
                for kind in ("command", "click"):
                    batch = await payloads(n, 0) if kind == "command" else await payloads(0, n)
                    await burst(url, batch, "burst", name)
                    await wait_idle()  # the bot's follow-up work is done

        names = list(targets)
        for r in range(spec["sustained_rounds"]):
            for name in names if r % 2 == 0 else names[::-1]:  # which bot goes first alternates
                batch = await payloads(spec["sustained"], spec["sustained"])
                for start in range(0, len(batch), n):
                    await burst(targets[name], batch[start:start + n], "sustained", name)
                await mark(f"sent-{r + 1}-{name}")  # the last burst answered; the follow-up work may go on
                started = time.monotonic()
                await wait_idle(quiet=0.5, timeout=300)
                drain.setdefault(name, []).append(round(time.monotonic() - started - 0.5, 3))
                await mark(f"sustained-{r + 1}-{name}")
        out.pop("warmup.x.command", None)
        out.pop("warmup.x.click", None)
    print(json.dumps({"results": out, "drain": drain}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
