"""Benchmark: listing the draft candidates of a 5,000-commit repository (target: at most 5 s).

The repository is written with `git fast-import`: 5,000 commits on one branch, each changing one
or two of 200 code files, every other one a test file too, with one merge of a side branch every
50 commits (4,900 + 100 side commits). `runs.drafts.candidates` is called on it through the
repository's mirror, as the page and the command call it, COLD once (right after the mirror is
cloned) and then REPEATS times; the figure is the median, and all must be under the target.

    DEBUG=true .venv/bin/python bench/bench_drafts.py [--commits 5000] [--strict]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GIT_ENV, emit, git, log, make_var_dir, median, r, setup_django  # noqa: E402

TARGET_S = 5.0
REPEATS = 5
MERGE_EVERY = 50


def fast_import_stream(commits: int) -> bytes:
    """A fast-import stream: `commits` commits on main, a merge every MERGE_EVERY of them."""
    lines: list[str] = []
    mark = 0
    when = 1_600_000_000

    def blob_commit(ref: str, message: str, files: dict[str, str], parents: list[int]) -> int:
        nonlocal mark, when
        mark += 1
        when += 60
        data = message.encode()
        lines.append(f"commit {ref}\nmark :{mark}\n")
        lines.append(f"author Bench <bench@example.com> {when} +0000\n")
        lines.append(f"committer Bench <bench@example.com> {when} +0000\n")
        lines.append(f"data {len(data)}\n{message}\n")
        if parents:
            lines.append(f"from :{parents[0]}\n")
            for other in parents[1:]:
                lines.append(f"merge :{other}\n")
        for path, text in files.items():
            payload = text.encode()
            lines.append(f"M 644 inline {path}\ndata {len(payload)}\n{text}\n")
        return mark

    head = blob_commit("refs/heads/main", "initial", {"README.md": "bench\n"}, [])
    made = 1
    while made < commits:
        if made % MERGE_EVERY == 0 and made + 2 <= commits:
            side_files = {
                f"src/side/mod{made}.py": f"X = {made}\n",
                f"tests/test_side{made}.py": "pass\n",
            }
            side = blob_commit("refs/heads/side", f"Side change {made}", side_files, [head])
            # fast-import starts a commit's tree from its first parent: the merge result is
            # written out, as git merge would leave it.
            head = blob_commit(
                "refs/heads/main",
                f"Merge branch 'side-{made}'\n\nSide feature {made}",
                side_files,
                [head, side],
            )
            made += 2
            continue
        files = {f"src/pkg{made % 20}/mod{made % 200}.py": f"VALUE = {made}\n"}
        if made % 2:
            files[f"tests/test_mod{made % 200}.py"] = f"def test_{made}():\n    assert True\n"
        head = blob_commit(
            "refs/heads/main", f"Change {made}\n\nBody of change {made}.", files, [head]
        )
        made += 1
    lines.append("done\n")
    return "".join(lines).encode()


def make_history(path: Path, commits: int) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "--bare")
    env = {**GIT_ENV, "HOME": str(path)}
    subprocess.run(
        ["git", "fast-import", "--quiet", "--done"],
        cwd=path,
        input=fast_import_stream(commits),
        env=env,
        check=True,
        capture_output=True,
    )
    git(path, "symbolic-ref", "HEAD", "refs/heads/main")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--strict", action="store_true")
    options = parser.parse_args()
    var_dir = make_var_dir("bench-drafts-")
    try:
        setup_django(var_dir)
        from runs import drafts
        from runs.models import Repository

        origin = var_dir / "repos" / "big.git"
        log(f"writing {options.commits} commits with git fast-import")
        started = time.monotonic()
        make_history(origin, options.commits)
        build_s = time.monotonic() - started
        commit_count = int(git(origin, "rev-list", "--count", "main"))
        repository = Repository.objects.create(name="big", url=str(origin), default_branch="main")

        log("cloning the mirror")
        mirror = drafts.mirror_for(repository, "main")
        started = time.monotonic()
        found = drafts.candidates(repository, mirror=mirror)
        cold_s = time.monotonic() - started
        timings = []
        for _ in range(REPEATS):
            started = time.monotonic()
            found = drafts.candidates(repository, mirror=mirror)
            timings.append(time.monotonic() - started)
        merges = sum(1 for c in found if c.is_merge)
        figures = {
            "benchmark": "drafts_candidates",
            "commits": commit_count,
            "build_s": r(build_s, 2),
            "candidates": len(found),
            "merge_candidates": merges,
            "cold_s": r(cold_s, 3),
            "median_s": r(median(timings), 3),
            "max_s": r(max(timings), 3),
            "target_s": TARGET_S,
            "met": max([cold_s, *timings]) <= TARGET_S,
        }
        emit(figures)  # exits 1 with --strict when the target is missed
        return 0
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
