"""`promtool`, Prometheus' own checker, and reading an exposition back into numbers.

promtool comes from the distribution (`scripts/system-packages.txt`); a test that needs it and
does not find it fails saying so, never skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install the Debian package 'prometheus' (scripts/test does,"
            " as root; see scripts/system-packages.txt)"
        )
    return path


def run_promtool(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, cwd=cwd, timeout=120
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def check_metrics(exposition: bytes) -> None:
    """`promtool check metrics`: the text format and the naming conventions (lint) both."""
    run_promtool("check", "metrics", stdin=exposition)


def samples(exposition: str) -> dict[str, float]:
    """Every sample, keyed as written: name{label="value",...} with labels sorted."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found
