"""The bench's CPU model (`bench.__main__.cpu_rate`): the rate the CPU a request allows, which the
bench prints as the machine's ceiling beside each scenario's ratio."""

from __future__ import annotations

import pytest

from bench.__main__ import cpu_rate


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
    assert cpu_rate((40.0, 2), [], cores=2) == pytest.approx(50_000)
    assert cpu_rate((40.0, 2), [], cores=1) == pytest.approx(25_000)
