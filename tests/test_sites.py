"""The in-process site cache: a reload never takes back a site this process just saved."""

from __future__ import annotations

from aggregations.sites import Site, SiteCache


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
