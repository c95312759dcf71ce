"""A real S3-compatible server on 127.0.0.1 for the tests: moto's server mode (PyPI `moto[server]`).

`bin/test` starts one for its PostgreSQL + Redis pass and exports MERGEABLE_STORAGE_URL, so that
every artifact of that pass goes through a bucket; tests/parallel.py gives each xdist process its
own bucket, and tests/conftest.py creates it and gives each test its own prefix. A test that needs
a bucket when none is configured (the drill, run on its own) starts a server here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# moto accepts any keys; boto3 refuses to sign without some.
TEST_KEYS = {"AWS_ACCESS_KEY_ID": "mergeable-test", "AWS_SECRET_ACCESS_KEY": "mergeable-test"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


class S3Server:
    """moto_server in its own process group, so that stopping it stops all of it."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto_server = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not answers(self.endpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def url(self, bucket: str, prefix: str = "") -> str:
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{bucket}{path}?endpoint_url={self.endpoint}&region={REGION}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def with_prefix(url: str, prefix: str) -> str:
    """A MERGEABLE_STORAGE_URL for ``prefix`` under the one given: s3://b/p?q -> s3://b/p/prefix?q."""
    parts = urlsplit(url)
    path = "/".join(part for part in (parts.path.strip("/"), prefix.strip("/")) if part)
    return parts._replace(path=f"/{path}").geturl()


def s3_client(storage_options: dict):
    """A boto3 client for the bucket that ``STORAGES["default"]["OPTIONS"]`` names."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=storage_options.get("endpoint_url"),
        region_name=storage_options.get("region_name") or REGION,
    )


def ensure_bucket(storage_options: dict) -> None:
    client = s3_client(storage_options)
    bucket = storage_options["bucket_name"]
    existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)


def object_names(storage_options: dict, prefix: str = "") -> list[str]:
    """Every key in the bucket under the storage's location (and ``prefix`` below it)."""
    client = s3_client(storage_options)
    location = storage_options.get("location", "").strip("/")
    full = "/".join(part for part in (location, prefix) if part)
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=storage_options["bucket_name"], Prefix=full
    ):
        names += [entry["Key"].removeprefix(location + "/") for entry in page.get("Contents", [])]
    return names


@pytest.fixture(name="s3_server", scope="session")
def s3_server_fixture(tmp_path_factory):
    """The S3 server this process stores in: bin/test's (MERGEABLE_STORAGE_URL), or one started
    here when a test needing a bucket runs without it; None in the first case."""
    from django.conf import settings

    if settings.MERGEABLE_STORAGE_URL:
        yield None
        return
    for name, value in TEST_KEYS.items():
        os.environ.setdefault(name, value)  # read by boto3 here and by the workers a test starts
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(name="object_storage")
def object_storage_fixture(s3_server, settings) -> dict:
    """Artifacts in a bucket of a real S3 server for this test (its own prefix): the options of
    ``STORAGES["default"]``. Worker processes a test starts store there too."""
    from evalsite.storage import from_url

    if s3_server is not None:
        settings.MERGEABLE_STORAGE_URL = s3_server.url(
            "mergeable-test-local", f"t-{uuid.uuid4().hex[:12]}"
        )
        settings.STORAGES = {
            **settings.STORAGES,
            "default": from_url(settings.MERGEABLE_STORAGE_URL),
        }
        ensure_bucket(settings.STORAGES["default"]["OPTIONS"])
    return settings.STORAGES["default"]["OPTIONS"]
