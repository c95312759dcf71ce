"""What a prompt's test command reported: pass and fail counts from JUnit XML, and the output.

Shared by executed runs (`runs.execution`) and imported ones (`runs.imports`), so a run is graded
the same way wherever its change came from.
"""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from runs import redaction
from runs.models import column_text

JUNIT_FILE = ".mergeable-junit.xml"
JUNIT_MAX_BYTES = 20_000_000
OUTPUT_TAIL_CHARS = 4000


def parse_junit(work: Path) -> tuple[int | None, int | None]:
    """Pass and fail counts from JUnit XML the test command wrote (pytest --junitxml).

    The test command runs code the agent may have changed, so the file is untrusted: a symlink
    (to a file of the host's, say) or anything but a regular file of sane size is ignored, and so
    is XML whose counts are not numbers. (None, None) when no usable file is found.
    """
    candidates = [work / JUNIT_FILE, *sorted(work.glob("*junit*.xml"))]
    for path in candidates:
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # missing, or a symlink
        with os.fdopen(descriptor, "rb") as opened:
            info = os.fstat(opened.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > JUNIT_MAX_BYTES:
                continue
            try:
                counts = _junit_counts(ET.parse(opened).getroot())  # noqa: S314 - see above
            except (ET.ParseError, ValueError):
                continue
        return counts
    return None, None


def _junit_counts(root: ET.Element) -> tuple[int, int]:
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failures = errors = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failures += int(suite.get("failures", 0))
        errors += int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    passed = tests - failures - errors - skipped
    if min(passed, failures, errors, skipped) < 0:
        raise ValueError("inconsistent JUnit counts")
    return passed, failures + errors


def output_tail(output: str) -> str:
    """The end of the test output, for the run's `test_output_tail` column.

    Scrubbed before it is cut, so a secret the cut would split cannot leak its half.
    """
    return column_text(redaction.scrub(output)[-OUTPUT_TAIL_CHARS:])
