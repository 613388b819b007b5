"""The closing count: a fixed number of beacons, every answer awaited, against Redis's total.

wrk stops mid-flight (requests written before its deadline may still be counted after it), so
its rounds can only bound the count; here every beacon sent is answered, so the page-view total
must move by exactly the number of 204s.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp

from bench.servers import DOMAIN, SITE

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


async def send_exactly(url: str, count: int, concurrency: int = 50) -> int:
    """POST `count` beacons; the number acknowledged (204)."""
    acked = 0
    todo = iter(range(count))
    rng = random.Random(7)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal acked
        for i in todo:
            article = str(rng.randint(1, 5000))
            body = f'{{"site":"{SITE}","url":"https://{DOMAIN}/tin-tuc/{article}","article":"{article}"}}'
            headers = {
                "User-Agent": UA,
                "X-Forwarded-For": f"198.19.{i // 256 % 256}.{i % 256}",
                "Origin": f"https://{DOMAIN}",
                "Content-Type": "text/plain",
            }
            async with session.post(url + "/collect", data=body, headers=headers) as resp:
                await resp.read()
                acked += resp.status == 204

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return acked
