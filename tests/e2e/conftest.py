"""Browser tests: pytest-playwright driving Debian's Chromium against Django's live_server.

Every test here needs `transactional_db` (the live server runs in another thread and must see
committed data) and should be marked `@pytest.mark.browser`. Helpers:

- ``login(page, live_server, user, password=PASSWORD)`` signs in through the real form and waits
  for the dashboard.
- ``console_errors`` is the list of console errors and uncaught exceptions of ``page`` so far,
  Content-Security-Policy violations included; a test can assert it stays empty.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

# The live server and Playwright's sync API share this thread with an event loop running, which
# makes Django refuse ORM calls from the test unless told that this is safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Launch the system Chromium (Playwright's own browsers are never downloaded)."""
    # Session-scoped, so it cannot use the function-scoped `chromium_path`; same lookup.
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    return {**browser_type_launch_args, "executable_path": path, "args": CHROMIUM_ARGS}


@pytest.fixture
def console_errors(page) -> list[str]:
    errors: list[str] = []

    def on_console(message) -> None:
        source = message.location.get("url", "")
        # Browsers ask for /favicon.ico on their own; the pages never link it.
        if message.type == "error" and not source.endswith("/favicon.ico"):
            errors.append(f"{message.text} ({source})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture
def login() -> Callable:
    def log_in(page, live_server, user, password: str = PASSWORD) -> None:
        page.goto(f"{live_server.url}/login/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")

    return log_in
