"""The web server (evalsite/gunicorn_config.py). Its master warms Django up before it forks its
workers (`warm_up`): the pages a restart's first logins ask for are served without compiling a
template. Its workers close a connection without waiting on a client that has sent its all
(`ThreadWorker`)."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def gunicorn(tmp_path: Path, *options: str):
    """The real server with its config on a free port, serving once it answers a page; yields
    the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "web.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "evalsite.wsgi:application"]
        + ["--config=python:evalsite.gunicorn_config", f"--bind=127.0.0.1:{port}", *options],
        cwd=settings.BASE_DIR,
        env={**os.environ, "MERGEABLE_VAR_DIR": str(tmp_path)},
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
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_gunicorn_warms_up_in_its_master_and_then_serves(tmp_path):
    """The real server with its config: the warm-up runs before the fork (a template that does
    not compile would stop the server here, not a worker on its first login), then pages."""
    with gunicorn(tmp_path, "--workers=1", "--threads=1"):
        assert "Booting worker" in (tmp_path / "web.log").read_text()


def _request(port: int, head: str, body: bytes = b"") -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(head.encode() + b"\r\n" + body)
    return connection


def _response(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes its side; the client's side stays open."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


LOGIN_PAGE = "GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"


def test_a_client_slow_to_close_its_connection_does_not_hold_up_the_next(tmp_path):
    """A browser closes its side of a connection a network round trip after the response; gunicorn
    waits for that on the one thread that accepts connections, up to 2 s. Here three clients
    hold theirs open while a fourth is answered, by a worker with one thread."""
    with gunicorn(tmp_path, "--workers=1", "--threads=1") as port:
        holding = []
        try:
            for _ in range(3):
                holding.append(_request(port, LOGIN_PAGE))
                assert _response(holding[-1]).startswith(b"HTTP/1.1 200 OK")
            started = time.monotonic()
            with _request(port, LOGIN_PAGE) as fourth:
                assert b'name="password"' in _response(fourth)
            # Answered in milliseconds; gunicorn's own close would have waited 2 s on each of the
            # three clients still holding their connections.
            assert time.monotonic() - started < 1.5
        finally:
            for connection in holding:
                connection.close()


def test_a_response_sent_before_the_request_was_read_whole_reaches_the_client(tmp_path):
    """An upload over the limit is refused from its headers, its body unread. Closing at once
    would reset the connection over the bytes still arriving, and the client could lose the
    response; that connection gets gunicorn's lingering close, and the client reads why."""
    too_big = 200 * 1024 * 1024  # MERGEABLE_MAX_UPLOAD_MB is 100
    head = (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {too_big}\r\n"
    )
    with gunicorn(tmp_path, "--workers=1", "--threads=1") as port:
        with _request(port, head, b"x" * 512 * 1024) as upload:
            response = _response(upload)
    assert response.startswith(b"HTTP/1.1 413")
    assert b"MERGEABLE_MAX_UPLOAD_MB" in response
