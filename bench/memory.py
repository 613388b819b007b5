"""Redis memory of the bench's keys, by kind (`MEMORY USAGE ... SAMPLES 0`: exact, not sampled)."""

from __future__ import annotations

from collections import defaultdict

import redis

from aggregations.keys import SiteKeys

KINDS = (
    ("va:", "visit articles"),
    ("rl:", "rate buckets"),
    ("seen", "seen (visits, online)"),
    ("pending", "pending"),
    ("ptitles", "pending titles"),
    ("batch", "batches in flight"),
    ("a", "article zsets"),
    ("salt", "salt"),
)


def kind_of(name: str) -> str:
    for start, kind in KINDS:
        if name.startswith(start):
            return kind
    return "period hashes + HLLs"


def usage_by_kind(client: redis.Redis, keys: SiteKeys) -> dict[str, tuple[int, int]]:
    """kind -> (keys, bytes) over every key of the site."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    names = [k.decode() for k in client.scan_iter(match=keys.base + "*", count=5000)]
    for i in range(0, len(names), 1000):
        chunk = names[i : i + 1000]
        pipe = client.pipeline(transaction=False)
        for name in chunk:
            pipe.memory_usage(name, samples=0)
        for name, used in zip(chunk, pipe.execute(), strict=True):
            entry = found[kind_of(name.removeprefix(keys.base))]
            entry[0] += 1
            entry[1] += int(used or 0)
    return {kind: (n, b) for kind, (n, b) in found.items()}


def report(redis_url: str, prefix: str, site: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = SiteKeys(prefix, site)
        by_kind = usage_by_kind(client, keys)
        visitors = int(client.zcard(keys.seen))
        pending_fields = int(client.hlen(keys.pending))
    finally:
        client.close()
    total = sum(b for _, b in by_kind.values())
    count = sum(n for n, _ in by_kind.values())
    lines = [f"  all keys of the site: {total / 1e6:.1f} MB in {count} keys"]
    for kind, (n, b) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"    {kind:<24} {n:>8} keys {b / 1e6:>9.2f} MB")
    per_visitor = sum(  # state that grows with visitors
        by_kind.get(k, (0, 0))[1] for k in ("visit articles", "seen (visits, online)")
    )
    if visitors:
        lines.append(
            f"  per daily visitor: {per_visitor / visitors:.0f} B of per-visitor state (seen +"
            f" visit articles; {visitors} visitors, all active within the visit timeout);"
            f" {total / visitors:.0f} B counting every key of the site"
        )
    if pending_fields:
        used = by_kind.get("pending", (0, 0))[1]
        lines.append(
            f"  per pending article-day (live): {used / pending_fields:.0f} B"
            f" ({pending_fields} fields since the last rollup)"
        )
    return lines
