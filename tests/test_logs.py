"""Logs an operator can read: JSON lines with the process id and an event's fields; no access
log unless asked; and the access log, when asked, without addresses or query strings."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from prometheus_client import CollectorRegistry

from analytics.app import create_app
from analytics.logs import ACCESS_LOGGER, FIELDS, AccessLogger, JsonFormatter, access_logger
from tests.conftest import ServiceTestServer, add_site, answered, send


def test_json_lines_carry_the_pid_and_the_fields():
    record = logging.LogRecord(
        "analytics", logging.WARNING, __file__, 1, "rollup: %d rows", (3,), None
    )
    setattr(record, FIELDS, {"rows": 3, "message": "not overwritten"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "rollup: 3 rows"
    assert entry["level"] == "warning"
    assert entry["rows"] == 3
    assert isinstance(entry["pid"], int)


async def serve(aiohttp_client, settings, clock):
    app = create_app(settings, clock=clock, registry=CollectorRegistry())
    server = ServiceTestServer(app)
    # as `analytics serve` runs it (aiohttp's test server would drop these if given at creation)
    await server.start_server(access_log_class=AccessLogger, access_log=access_logger(settings))
    client = await aiohttp_client(server)
    await add_site(client)
    return client


@pytest.mark.parametrize("enabled", [False, True])
async def test_access_log_only_when_asked_and_without_addresses(
    aiohttp_client, settings, clock, caplog, enabled
):
    settings = dataclasses.replace(settings, access_log=enabled)
    client = await serve(aiohttp_client, settings, clock)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    before = answered(client)
    assert (await send(client, ip="203.0.113.77", article="123")).status == 204
    assert answered(client) == before + 1  # the beacon's line comes from the connection's path
    pixel = await client.get(
        "/collect.gif?site=caobang&url=https://caobang.gov.vn/private?token=abc",
        headers={"X-Forwarded-For": "203.0.113.78"},
    )
    assert pixel.status in (200, 204)
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    if not enabled:
        assert lines == []
        return
    assert [r.getMessage().split()[:3] for r in lines[-2:]] == [
        ["POST", "/collect", "204"],
        ["GET", "/collect.gif", "200"],
    ]
    assert getattr(lines[-2], FIELDS)["route"] == "collect"
    assert getattr(lines[-1], FIELDS)["route"] == "pixel"
    text = "\n".join(f"{r.getMessage()} {getattr(r, FIELDS)}" for r in lines)
    for secret in ("203.0.113.", "127.0.0.1", "token=abc", "Mozilla"):
        assert secret not in text


async def test_answers_made_on_the_connection_log_the_bytes_aiohttp_would(
    aiohttp_client, settings, clock, caplog
):
    """A beacon or cached read answered beneath aiohttp's request layer logs the same line as
    the routed answer to the same request: the bytes written, headers included."""
    settings = dataclasses.replace(settings, access_log=True)
    client = await serve(aiohttp_client, settings, clock)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    reads = client.server.runner.server.reads
    counters = "/api/v1/sites/caobang/counters"
    beacons, before = answered(client), reads.answered
    assert (await send(client, ip="203.0.113.80", query="?via=router")).status == 204
    assert (await send(client, ip="203.0.113.81")).status == 204
    assert (await client.get(counters + "?via=router")).status == 200  # fills the cache
    assert (await client.get(counters)).status == 200
    assert answered(client) == beacons + 1
    assert reads.answered == before + 1
    lines = [getattr(r, FIELDS) for r in caplog.records if r.name == ACCESS_LOGGER][-4:]
    assert [(f["method"], f["path"], f["status"]) for f in lines] == [
        ("POST", "/collect", 204),
        ("POST", "/collect", 204),
        ("GET", counters, 200),
        ("GET", counters, 200),
    ]
    assert lines[0]["bytes"] == lines[1]["bytes"] > 0
    assert lines[2]["bytes"] == lines[3]["bytes"] > len(b'{"site":"caobang"}')
