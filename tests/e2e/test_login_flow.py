"""Signing in and out in a real browser, under the real Content-Security-Policy."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from evalsite.roles import ADMIN, set_role
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def test_it_logs_an_admin_in_and_out(transactional_db, live_server, page, login, console_errors):
    admin = get_user_model().objects.create_user(username="ada", password=PASSWORD)
    set_role(admin, ADMIN)

    login(page, live_server, admin)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.get_by_role("link", name="Users")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{live_server.url}/login/")
    expect(page.get_by_role("heading", name="Log in to Mergeable")).to_be_visible()

    # Logged out for real: the dashboard sends us back to the login page.
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(f"{live_server.url}/login/?next=/")
    # The pages' scripts loaded and ran without tripping the Content-Security-Policy.
    assert console_errors == []


def test_it_keeps_a_wrong_password_out(transactional_db, live_server, page):
    get_user_model().objects.create_user(username="sam", password=PASSWORD)
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("sam")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username")
    expect(page).to_have_url(f"{live_server.url}/login/")
