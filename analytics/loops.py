"""The event loop `analytics serve` runs on: uvloop where it is installed, else asyncio's own.

`ANALYTICS_EVENT_LOOP` = `auto` (default), `uvloop` or `asyncio`. uvloop's transports and loop are
C (libuv): measured with the bench (`python -m bench`), the service answers about 10 % more
requests a second on it - see README "Benchmarks".
"""

from __future__ import annotations

import asyncio
import importlib.util

CHOICES = ("auto", "uvloop", "asyncio")


def loop_kind(wanted: str) -> str:
    """`uvloop` or `asyncio`, for the setting `auto`, `uvloop` or `asyncio`."""
    wanted = (wanted or "auto").strip().lower()
    if wanted == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return wanted


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()
