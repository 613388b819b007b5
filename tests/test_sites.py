"""The in-process site cache: a reload never takes back a site this process just saved; the loop
that keeps it fresh stops when asked."""

from __future__ import annotations

import asyncio

from aggregations.sites import Site, SiteCache
from analytics.lifecycle import listen_for_sites, sites_loop


def test_a_reload_that_began_before_a_put_keeps_the_put():
    cache = SiteCache([Site("caobang")])
    read_from = cache.generation  # a reload starts reading the table...
    cache.put(Site("backan"))  # ...an admin request saves a site meanwhile...
    cache.replace([Site("caobang")], read_from)  # ...and the reload's older snapshot lands
    assert cache.get("backan") is not None
    # a later reload that has seen the put needs no help; one that drops the site is believed
    read_from = cache.generation
    cache.replace([Site("caobang")], read_from)
    assert cache.get("backan") is None


def test_a_put_updates_and_a_reload_replaces():
    cache = SiteCache([Site("caobang", timezone="Asia/Ho_Chi_Minh")])
    cache.put(Site("caobang", timezone="Europe/Berlin"))
    assert cache.get("caobang").timezone == "Europe/Berlin"
    read_from = cache.generation
    cache.replace([Site("caobang", timezone="Asia/Bangkok"), Site("lamdong")], read_from)
    assert cache.get("caobang").timezone == "Asia/Bangkok"
    assert len(cache) == 2


async def test_a_stop_that_comes_as_a_site_change_is_announced_still_stops(client):
    """The sites loop is stopped by cancelling it. A change announced in the same moment must
    not swallow the stop (Python 3.11's wait_for returns the awaited result when a cancel
    lands just after it completed, and the loop went on refreshing: `analytics site add`
    hung for good once in a benchmark's start-up, in the shutdown right after its NOTIFY)."""
    app = client.app
    changed = asyncio.Event()
    listener = await listen_for_sites(app, changed)
    task = asyncio.create_task(sites_loop(app, changed, listener))
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is waiting for a change
    changed.set()  # the change wakes the waiting loop; the stop comes before it has run
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    if task not in done:
        task.cancel()  # the old loop: stop it for good, as a second cancel does
    assert task in done, "the sites loop went on after it was cancelled"
    assert task.cancelled()
    assert listener.is_closed()
