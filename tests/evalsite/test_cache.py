"""The shared Redis cache never unpickles what it did not sign itself (a real redis-server)."""

from __future__ import annotations

import pickle
import shutil
import socket
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe

from scoring import leaderboard
from scoring.leaderboard import cache as leaderboard_cache
from tests.conftest import skip_unless_installed


class _Planted:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    skip_unless_installed(
        shutil.which("redis-server") is not None,
        "redis-server is not installed (apt-get install -y redis-server)",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != (
        b"PONG\n"
    ):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/1"
    server.terminate()
    server.wait(10)


@pytest.fixture
def redis_cache(settings, redis_url):
    """The cache exactly as settings.py configures it for MERGEABLE_CACHE_URL."""
    settings.CACHES = {
        "default": {
            "BACKEND": "evalsite.cache.SignedRedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "mergeable",
        }
    }
    cache.clear()
    yield cache
    cache.clear()


def _raw_redis(redis_url: str):
    import redis

    return redis.Redis.from_url(redis_url)


def _board_key() -> str:
    """The Redis key under which the leaderboard page caches its board, as things stand."""
    return cache.make_key(leaderboard_cache.cache_key("board", leaderboard.Filters()))


@pytest.mark.django_db
def test_it_reads_a_planted_pickle_as_a_miss_without_running_it(redis_cache, redis_url, tmp_path):
    marker = tmp_path / "code-ran"
    redis_client = _raw_redis(redis_url)
    assert not redis_client.exists(_board_key())
    redis_client.set(_board_key(), pickle.dumps(_Planted(marker)))

    board = leaderboard.board(leaderboard.Filters())

    assert not marker.exists()
    assert board["rows"] == []  # computed afresh: the planted value was a miss
    assert redis_client.get(_board_key()).startswith(b"mergeable-signed:")  # and replaced


@pytest.mark.django_db
def test_it_refuses_a_planted_pickle_with_a_forged_signature(redis_cache, redis_url, tmp_path):
    marker = tmp_path / "code-ran"
    cache.set("probe", {"a": 1})
    signed = _raw_redis(redis_url).get(cache.make_key("probe"))
    prefix = signed[: len(b"mergeable-signed:") + 32]
    _raw_redis(redis_url).set(cache.make_key("probe"), prefix + pickle.dumps(_Planted(marker)))
    _raw_redis(redis_url).set(cache.make_key("other"), b"mergeable-signed:" + b"\0" * 32)

    assert cache.get("probe", "missing") == "missing"
    assert cache.get_many(["probe", "other"]) == {}
    assert not marker.exists()


def test_it_round_trips_what_the_project_caches(redis_cache):
    value = {
        "rows": [{"contestant": "qwen", "merge_rate_ci": (0.34, 0.74), 7: None}],
        "since": date(2026, 1, 2),
        "html": mark_safe("<td>1</td>"),
    }
    cache.set("board", value)
    cache.set_many({"a": "text", "b": [1, 2.5]})

    assert cache.get("board") == value
    assert isinstance(cache.get("board")["html"], SafeString)
    assert cache.get_many(["a", "b", "missing"]) == {"a": "text", "b": [1, 2.5]}


def test_it_keeps_counters_working(redis_cache):
    assert cache.add("generation", 0, timeout=None)
    assert cache.incr("generation") == 1
    assert cache.get("generation") == 1
    assert cache.get_many(["generation"]) == {"generation": 1}


@pytest.mark.django_db
def test_it_serves_the_leaderboard_from_the_signed_cache(redis_cache, redis_url):
    first = leaderboard.board(leaderboard.Filters())
    assert _raw_redis(redis_url).get(_board_key()).startswith(b"mergeable-signed:")
    assert leaderboard.board(leaderboard.Filters()) == first
