"""The embedded queue publishes each message whole: a polling worker never reads half of one."""

from __future__ import annotations

import os

import pytest
from kombu import Connection

from evalsite import embedded_queue


@pytest.fixture
def channel(tmp_path):
    folder = tmp_path / "messages"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection(transport=embedded_queue.Transport, transport_options=options) as connection:
        yield connection.default_channel, folder


def test_a_message_appears_only_once_written_in_full(channel, monkeypatch):
    channel, folder = channel
    seen_before_publishing = []
    replace = os.replace

    def watching_replace(source, target):
        # What a consumer listing the folder right now would find: nothing it may take.
        visible = [name for name in os.listdir(folder) if name.endswith(".tasks.msg")]
        seen_before_publishing.append((visible, os.path.getsize(source)))
        replace(source, target)

    monkeypatch.setattr(embedded_queue.os, "replace", watching_replace)
    payload = {"body": "x" * 100_000, "headers": {"task": "runs.tasks.execute_run"}}
    channel._put("tasks", payload)

    [(visible, size)] = seen_before_publishing
    assert visible == [] and size > 100_000
    assert channel._get("tasks") == payload
    assert os.listdir(folder) == []  # no partial file left behind


def test_a_failed_write_leaves_nothing_behind(channel, monkeypatch):
    channel, folder = channel

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded_queue.os, "replace", full_disk)
    with pytest.raises(Exception, match="Cannot add file"):
        channel._put("tasks", {"body": "x"})
    assert os.listdir(folder) == []
