"""How long bot screening takes on adversarial user agents (CPU time, not wall time).

    .venv/bin/python -m bench.user_agents

For each length it builds adversarial user agents (each crawler pattern's literal part repeated,
a single repeated letter, random printable text) and reports the worst CPU time of one
uncached classification. Past `MAX_USER_AGENT` the patterns never run, which is why an 8 KiB
user agent costs a length check. A figure, not a test: timings on a shared machine are noisy.
"""

from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable

import crawleruseragents

from collectors import screening
from collectors.screening import MAX_USER_AGENT, is_bot

META = re.compile(r"[\\\[\]()^$.*+?{}|]")
ROUNDS = 5


def adversarial(length: int) -> dict[str, str]:
    rng = random.Random(length)
    cases = {
        "letter": "a" * length,
        "random": "".join(rng.choice(string.printable[:94]) for _ in range(length)),
    }
    for item in crawleruseragents.CRAWLER_USER_AGENTS_DATA:
        literal = META.sub("", item["pattern"])[:8]
        if literal:
            cases["pattern " + literal] = (literal * (length // len(literal) + 1))[:length]
    return cases


def worst(length: int, classify: Callable[[str], bool]) -> tuple[float, str]:
    result = (0.0, "")
    for name, ua in adversarial(length).items():
        started = time.process_time()
        for _ in range(ROUNDS):
            classify(ua)
        result = max(result, ((time.process_time() - started) / ROUNDS, name))
    return result


def main() -> None:
    is_bot("warm up the compiled patterns")
    uncached = screening._classify.__wrapped__
    print(f"{len(crawleruseragents.CRAWLER_USER_AGENTS_DATA)} crawler patterns")
    for length in (256, 512, MAX_USER_AGENT):
        seconds, name = worst(length, uncached)
        print(f"patterns over {length:>5} chars: worst {seconds * 1000:6.2f} ms CPU ({name})")
    for length in (MAX_USER_AGENT + 1, 8 * 1024):
        seconds, name = worst(length, is_bot)
        print(f"is_bot over   {length:>5} chars: worst {seconds * 1000:6.3f} ms CPU ({name})")
    seconds, name = worst(8 * 1024, uncached)
    print(f"(without the length cap, 8 KiB would cost up to {seconds * 1000:.2f} ms: {name})")


if __name__ == "__main__":
    main()
