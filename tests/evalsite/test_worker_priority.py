"""bin/worker runs its pools below the priority it was started at (MERGEABLE_WORKER_NICE), so a
web server on the same machine comes first. The pools here are a stand-in interpreter that
reports the priority it got and ends, which makes bin/worker stop: the script itself is real."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

WORKER = Path(settings.BASE_DIR) / "bin" / "worker"


def _start(tmp_path: Path, nice: str | None) -> subprocess.CompletedProcess:
    reports = tmp_path / "reports"
    reports.mkdir()
    python = tmp_path / "python"
    # Each pool reports, then waits for the other's report: the first to end stops both.
    python.write_text(
        "#!/bin/sh\n"
        f'cat /proc/self/stat /proc/self/autogroup > "{reports}/.$$" 2>/dev/null\n'
        f'mv "{reports}/.$$" "{reports}/$$"\n'
        "i=0\n"
        f'while [ "$(ls "{reports}" | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do\n'
        "    sleep 0.05; i=$((i + 1))\n"
        "done\n"
    )
    python.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "MERGEABLE_WORKER_NICE"}
    if nice is not None:
        env["MERGEABLE_WORKER_NICE"] = nice
    return subprocess.run(
        [str(WORKER), "--concurrency=1"],
        env={**env, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,  # a session of its own, as under systemd or Docker
    )


def _reports(tmp_path: Path) -> list[tuple[int, str]]:
    """(niceness, autogroup line or "") of each pool."""
    found = []
    for report in (tmp_path / "reports").glob("[!.]*"):
        stat, _, group = report.read_text().partition("\n")
        found.append((int(stat.rsplit(")", 1)[1].split()[16]), group.strip()))
    return found


@pytest.mark.parametrize(("setting", "lower_by"), [(None, 10), ("3", 3)])
def test_both_pools_and_their_session_group_run_below_the_priority_it_started_at(
    tmp_path, setting, lower_by
):
    mine = os.getpriority(os.PRIO_PROCESS, 0)

    _start(tmp_path, setting)

    pools = _reports(tmp_path)
    assert len(pools) == 2
    for niceness, group in pools:
        assert niceness == min(19, mine + lower_by)
        grouped = re.fullmatch(r"/autogroup-\d+ nice (-?\d+)", group)
        if grouped:  # the kernel groups sessions, and this one is the worker's own
            assert int(grouped[1]) == min(19, mine + lower_by)


@pytest.mark.parametrize("value", ["high", "20", "-1", "5.5"])
def test_it_refuses_a_priority_that_is_not_0_to_19_and_says_which_setting(tmp_path, value):
    result = _start(tmp_path, value)

    assert result.returncode == 2
    assert f"MERGEABLE_WORKER_NICE must be a whole number from 0 to 19, got '{value}'" in (
        result.stderr
    )
    assert not _reports(tmp_path)  # no pool was started
