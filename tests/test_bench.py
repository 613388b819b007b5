"""The bench's CPU model (`bench.__main__.cpu_rate`): the rate the CPU a request allows, which the
bench prints as the machine's ceiling beside each scenario's ratio."""

from __future__ import annotations

import argparse

import pytest

from bench.__main__ import Rounds, cpu_budget, cpu_rate
from bench.load import Result


def test_a_single_threaded_server_is_held_to_one_core() -> None:
    # 40 us a request on one thread: 25 000/s, though the two cores could do more together
    assert cpu_rate((40.0, 1), [(10.0, 2)], cores=2) == pytest.approx(25_000)


def test_processes_that_share_the_cores_are_held_to_their_sum() -> None:
    # server 40 + Redis 40 + wrk 20 = 100 us a request on 2 cores: 20 000/s, below each alone
    assert cpu_rate((40.0, 1), [(40.0, 1), (20.0, 2)], cores=2) == pytest.approx(20_000)


def test_a_busier_second_process_is_the_limit() -> None:
    # Redis at 50 us on its one thread caps the rate at 20 000/s, whatever the server costs
    assert cpu_rate((10.0, 2), [(50.0, 1)], cores=8) == pytest.approx(20_000)


def test_more_workers_lift_the_one_core_limit() -> None:
    assert cpu_rate((40.0, 2), [], cores=4) == pytest.approx(50_000)  # two workers' cores
    assert cpu_rate((40.0, 2), [], cores=1) == pytest.approx(25_000)  # one core for both


def test_no_cpu_at_all_is_no_limit_and_no_crash() -> None:
    assert cpu_rate((0.0, 1), [(0.0, 1)], cores=2) > 1e12


def result(requests: int, server: float, redis: float, wrk: float, preempted: int = 0) -> Result:
    return Result(
        requests=requests,
        sent=0,
        seconds=1.0,
        status_errors=0,
        socket_errors=0,
        p50_ms=1.0,
        p99_ms=2.0,
        max_ms=5.0,
        client_cpu=wrk,
        server_cpu=server,
        redis_cpu=redis,
        preempted=preempted,
    )


def test_the_budget_puts_the_bare_apps_cost_beside_the_services_redis_and_wrk() -> None:
    # per request: bare app 40 us + wrk 10; service 100 us + Redis 40 + wrk 20 (10 000 requests)
    rounds = Rounds(
        bare=[result(20_000, 0.8, 0.0, 0.2, preempted=20)],
        service=[result(10_000, 1.0, 0.4, 0.2, preempted=2_500)],
    )
    lines = cpu_budget(rounds, 2, argparse.Namespace(threads=2, workers=1))
    assert "bare app 40 us + wrk 10 us; service 100 us + Redis 40 us + wrk 20 us" in lines[0]
    assert "preempted a request: bare app 0.001, service 0.250" in lines[0]
    # bare: held to its core, 25 000/s; service: 10 000/s on its core; a service at 40 us
    # beside Redis 40 and wrk 20: 2 cores / 100 us = 20 000/s, 0.80 of the bare app's
    assert "bare app 25000/s (measured 20000/s), service 10000/s (measured 10000/s)" in lines[1]
    assert "(1 process) beside this Redis and wrk: 20000/s, ratio about 0.80" in lines[1]
    two = cpu_budget(rounds, 2, argparse.Namespace(threads=2, workers=2))
    assert "service 12500/s" in two[1]  # 2 cores / 160 us: the cores, not one worker's, bind
