"""The web server's master warms Django up before it forks its workers (evalsite/gunicorn_config.py
`warm_up`): the pages a restart's first logins ask for are served without compiling a template."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pygments.lexers
import pytest
from django.conf import settings
from django.template import engines
from django.template.base import Template
from django.urls import get_resolver, reverse

from evalsite.gunicorn_config import warm_up
from runs import diffs
from tests.scoring.test_review import make_run


@pytest.fixture
def cold_templates():
    """The template cache as a newly started process has it: empty."""
    loader = engines["django"].engine.template_loaders[0]
    loader.reset()
    yield
    loader.reset()


@pytest.fixture
def compiled(monkeypatch):
    """The names of the templates compiled while the test runs."""
    names = []
    original = Template.compile_nodelist

    def compile_nodelist(self):
        names.append(self.origin.template_name)
        return original(self)

    monkeypatch.setattr(Template, "compile_nodelist", compile_nodelist)
    return names


def test_a_cold_process_compiles_the_templates_of_the_first_pages_it_serves(
    cold_templates, compiled, client
):
    # The measure the next test relies on: without the warm-up, the login page compiles.
    assert client.get(reverse("login")).status_code == 200
    assert "registration/login.html" in compiled


def test_after_the_warm_up_the_first_pages_compile_nothing(
    cold_templates, compiled, scorer, client_for, client
):
    warm_up()
    assert "registration/login.html" in compiled  # the warm-up compiled it
    compiled.clear()
    run = make_run()

    assert client.get(reverse("login")).status_code == 200
    scoring = client_for(scorer)
    assert scoring.get(reverse("dashboard")).status_code == 200
    page = scoring.get(reverse("scoring:review", kwargs={"review_key": run.review_key}))
    assert page.status_code == 200
    assert compiled == []


@pytest.fixture
def cold_highlighter(monkeypatch):
    """Pygments' compiled file-name patterns and the lexers picked, as a new process has them:
    none. Returns the patterns compiled since."""
    patterns: dict = {}
    # The globals its functions read: pygments.lexers replaces its module object on import.
    monkeypatch.setitem(pygments.lexers._fn_matches.__globals__, "_pattern_cache", patterns)
    diffs._lexer_for.cache_clear()
    yield patterns
    diffs._lexer_for.cache_clear()


DIFF = "diff --git a/lib/parse.rs b/lib/parse.rs\n--- a/lib/parse.rs\n+++ b/lib/parse.rs\n@@ -1 +1 @@\n-fn a() {}\n+fn b() {}\n"


def test_a_cold_process_compiles_pygments_patterns_for_its_first_diff(cold_highlighter):
    diffs.render_diff(DIFF)
    assert len(cold_highlighter) > 100  # every lexer's file-name patterns, until one matches


def test_after_the_warm_up_the_first_diff_compiles_no_pattern(cold_highlighter):
    warm_up()
    compiled_by_warm_up = len(cold_highlighter)
    rendered = diffs.render_diff(DIFF)
    assert len(cold_highlighter) == compiled_by_warm_up > 100
    assert "b" in str(rendered["files"][0]["hunks"])


def test_the_masters_warm_up_hashes_a_password_without_starting_a_thread(monkeypatch):
    """The master hashes once (the C library learns to keep a hash's memory in its heap) but
    starts no hashing thread: it forks its workers next, and a thread at fork time is one the
    child does not have."""
    from evalsite import hashers

    monkeypatch.setattr(hashers, "_hashing", None)  # as the master has it before its first hash
    assert hashers.hash_once().startswith("argon2$argon2id$v=19$m=24576,t=2,p=1$")
    assert hashers._hashing is None
    hashed = []
    monkeypatch.setattr(hashers, "hash_once", lambda: hashed.append(threading.get_ident()))
    warm_up()
    assert hashed == [threading.get_ident()]
    assert hashers._hashing is None


def test_a_new_web_worker_starts_its_hashing_thread_before_its_first_login(monkeypatch):
    from evalsite import gunicorn_config, hashers

    monkeypatch.setattr(hashers, "_hashing", None)  # as a newly forked worker has it
    gunicorn_config.post_worker_init(worker=None)
    assert hashers._hashing is not None
    (thread,) = hashers._hashing._threads
    assert thread.is_alive() and thread.name.startswith("password-hashing")


def test_the_master_leaves_what_it_loaded_out_of_every_later_collection(monkeypatch):
    """After the warm-up the master freezes its heap: the site it loaded (the URL table, the
    compiled templates) is out of the collector's passes, in the master and in the workers it
    forks, so no worker walks it, or copies its pages, mid-request."""
    from evalsite import gunicorn_config

    monkeypatch.setattr(gunicorn_config, "warm_up", lambda: None)  # loaded already, in this test
    resolver = get_resolver()
    assert any(tracked is resolver for tracked in gc.get_objects())
    try:
        gunicorn_config.when_ready(server=None)
        assert gc.get_freeze_count() > 10_000
        assert not any(tracked is resolver for tracked in gc.get_objects())
        made_after = [[]]
        assert any(tracked is made_after for tracked in gc.get_objects())
    finally:
        gc.unfreeze()


def test_gunicorn_warms_up_in_its_master_and_then_serves(tmp_path):
    """The real server with its config: the warm-up runs before the fork (a template that does
    not compile would stop the server here, not a worker on its first login), then pages."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gunicorn = Path(sys.executable).parent / "gunicorn"
    log = tmp_path / "web.log"
    server = subprocess.Popen(
        [str(gunicorn), "evalsite.wsgi:application", "--config=python:evalsite.gunicorn_config"]
        + [f"--bind=127.0.0.1:{port}", "--workers=1", "--threads=1"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "MERGEABLE_VAR_DIR": str(tmp_path), "WEB_CONCURRENCY": "1"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5) as page:
                    assert page.status == 200
                    assert 'name="password"' in page.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
