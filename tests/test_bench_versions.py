"""`bench.versions`: each version of the service runs from its own checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.versions import checkouts, code_env, git

REPO = Path(__file__).resolve().parents[1]
# where Python finds the service's packages; `-c` puts the working directory first on the
# import path as `-m` does, which is how the bench starts a version (`python -m analytics`)
WHERE = "import aggregations, analytics, bench; print(aggregations.__file__, analytics.__file__)"


def imported_from(env: dict[str, str], cwd: Path) -> list[Path]:
    done = subprocess.run(
        [sys.executable, "-c", WHERE],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return [Path(p).resolve() for p in done.stdout.split()]


def test_a_revision_is_served_from_a_worktree_of_its_own_removed_afterwards() -> None:
    with checkouts(["HEAD", "."], REPO) as found:
        (label, worktree), (here_label, here) = found
        assert label.startswith("HEAD (")
        assert here_label == ". (working tree)"
        assert here == REPO
        assert worktree != REPO
        assert (worktree / "aggregations" / "lua" / "record.lua").is_file()
        for directory in (worktree, here):
            files = imported_from(code_env(directory), directory)
            assert all(f.is_relative_to(directory.resolve()) for f in files), files
        # the mistake the bench avoids: PYTHONPATH alone, run from this checkout, gives this
        # checkout's code, not the worktree's
        files = imported_from(code_env(worktree), REPO)
        assert all(f.is_relative_to(REPO) for f in files), files
    assert not worktree.exists()
    assert str(worktree) not in git(REPO, "worktree", "list")
