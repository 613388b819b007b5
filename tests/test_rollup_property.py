"""Property: over any interleaving of beacons, clock moves, rollups and rollup crashes,
PostgreSQL's applied counts plus Redis's pending counts equal what was accepted."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregations.rollup import STEPS
from analytics import appkeys as K
from tests.conftest import TABLES, add_site, send
from tests.rollup_helpers import Crash, crash_at, pending, rollup, stored
from tests.stores import flush_prefix

pytestmark = pytest.mark.cluster

beacon = st.tuples(st.just("beacon"), st.integers(0, 5), st.sampled_from([None, "a", "b", "c"]))
tick = st.tuples(st.just("tick"), st.integers(1, 6 * 3600))
roll = st.tuples(st.just("rollup"), st.sampled_from([None, *STEPS]))
programs = st.lists(st.one_of(beacon, beacon, beacon, tick, roll), min_size=1, max_size=25)
examples = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=programs)
async def test_applied_plus_pending_equals_accepted(make_client, settings, db, clock, program):
    # every example starts empty: its own key prefix, empty tables
    own = dataclasses.replace(
        settings, article_dedup=False, redis_prefix=f"{settings.redis_prefix}e{next(examples)}"
    )
    await db.execute(f"TRUNCATE {TABLES} CASCADE")
    client = await make_client(settings=own)
    try:
        await add_site(client)
        app = client.app
        accepted_pv = 0
        accepted: dict[str, int] = {}
        for op in program:
            if op[0] == "beacon":
                _, who, article = op
                resp = await send(client, ip=f"10.3.0.{who}", article=article)
                assert resp.status == 204
                accepted_pv += 1
                if article:
                    accepted[article] = accepted.get(article, 0) + 1
            elif op[0] == "tick":
                clock.advance(op[1])
            else:
                app[K.ROLLUP].failpoint = crash_at(op[1]) if op[1] else (lambda _: None)
                with contextlib.suppress(Crash):
                    await rollup(app)
                app[K.ROLLUP].failpoint = lambda _: None
            s = await stored(db)
            p = await pending(app)
            assert s["pageviews"] + p.get("#pv", 0) == accepted_pv
            for article, n in accepted.items():
                assert s["articles"].get(article, 0) + p.get(article, 0) == n
        # and a clean rollup at the end leaves everything in PostgreSQL
        await rollup(app)
        s = await stored(db)
        assert s["pageviews"] == accepted_pv
        assert s["articles"] == accepted
        assert await pending(app) == {}
    finally:
        await client.close()
        flush_prefix(own.redis_url, own.redis_prefix)
