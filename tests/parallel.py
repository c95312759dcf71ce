"""Give each pytest-xdist process its own var directory (SQLite files, embedded queue), its
own Redis database and its own bucket, so parallel processes never share a queue or artifacts.

Loaded with `-p tests.parallel` (pyproject's addopts) before pytest-django reads the settings,
which it does before any conftest is imported. Process gwN uses $MERGEABLE_VAR_DIR/gwN and
Redis database D-N, where D is the database CELERY_BROKER_URL names (15 by default).
"""

from __future__ import annotations

import os
import re

worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if worker.startswith("gw"):
    index = int(worker.removeprefix("gw"))
    if os.environ.get("MERGEABLE_VAR_DIR"):
        os.environ["MERGEABLE_VAR_DIR"] = os.path.join(os.environ["MERGEABLE_VAR_DIR"], worker)
    broker = os.environ.get("CELERY_BROKER_URL", "")
    match = re.fullmatch(r"(redis://[^?#]*/)(\d+)", broker)
    if match:
        database = (int(match.group(2)) - index) % 16
        os.environ["CELERY_BROKER_URL"] = f"{match.group(1)}{database}"
    # And its own bucket (tests/conftest.py creates it): s3://mergeable-test -> mergeable-test-gwN.
    match = re.fullmatch(r"s3://([^/?#]+)(.*)", os.environ.get("MERGEABLE_STORAGE_URL", ""))
    if match:
        os.environ["MERGEABLE_STORAGE_URL"] = f"s3://{match.group(1)}-{worker}{match.group(2)}"
