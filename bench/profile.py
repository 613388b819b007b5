"""Sampling profile of a serving process under load (py-spy), summarised as the top functions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        print("bench: py-spy is not installed (pip install py-spy): no profile", flush=True)
        return None
    cmd = [exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds)))]
    cmd += ["-r", "200", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def short(frame: str) -> str:
    found = FRAME.match(frame)
    if not found:
        return frame
    path = found["file"]
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = path.split("/", 1)[-1]
    return f"{found['func']} ({path})"


def summary(raw: Path, top: int = 15) -> list[str]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; self time (the function itself):"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive time (the function and what it calls), service code and libraries:")
    ranked = [(f, n) for f, n in inclusive.most_common() if "<module>" not in f]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in ranked[: top + 10]]
    return lines
