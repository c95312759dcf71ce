"""Repository URLs that would turn git against the worker: a dash option, or a local address."""

from __future__ import annotations

import pytest

from runs.repository_urls import check_repository_url_safety

LOCAL_HTTP = [
    ("http://127.0.0.1/shop.git", "loopback"),
    ("https://127.8.9.10:8443/shop.git", "loopback"),
    ("http://localhost/shop.git", "loopback"),
    ("http://LOCALHOST./shop.git", "loopback"),
    ("http://git.localhost/shop.git", "loopback"),
    ("http://[::1]/shop.git", "loopback"),
    ("http://[::ffff:127.0.0.1]/shop.git", "loopback"),
    ("http://[::ffff:7f00:1]/shop.git", "loopback"),
    ("http://[::127.0.0.1]/shop.git", "loopback"),
    ("http://127.1/shop.git", "loopback"),
    ("http://2130706433/shop.git", "loopback"),
    ("http://0x7f000001/shop.git", "loopback"),
    ("http://0177.0.0.1/shop.git", "loopback"),
    ("http://%31%32%37.0.0.1/shop.git", "loopback"),
    ("https://user:hunter2@127.0.0.1/shop.git", "loopback"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/shop.git", "link-local"),
    ("http://[fe80::1%25eth0]/shop.git", "link-local"),
    ("http://[::ffff:169.254.169.254]/x.git", "link-local"),
    ("http://0.0.0.0/shop.git", "unspecified"),
    ("http://0/shop.git", "unspecified"),
    ("http://[::]/shop.git", "unspecified"),
]

DASHED = [
    "https://git.example.com/-oProxyCommand=touch/x.git",
    "https://git.example.com/team/--upload-pack=touch",
    "https://git.example.com/team/%2Dx.git",
    "ssh://git@git.example.com/-x.git",
    "git://git.example.com/team/-x",
    "git@github.com:-oProxyCommand=x/y.git",
    "git@github.com:team/-x.git",
    "/var/repos/-x",
    "file:///var/repos/-x",
]

ACCEPTED = [
    "https://github.com/team/shop.git",
    "http://intranet.local/team/shop.git",
    "https://10.0.0.5/team/shop.git",
    "http://192.168.1.20/shop.git",
    "https://[2001:db8::1]/shop.git",
    "https://git.example.com/team/shop-api.git",
    "https://git.example.com/team/shop.git?ref=-x",
    "git@github.com:team/shop.git",
    "ssh://git@127.0.0.1:2222/team/shop.git",  # only http(s) is refused on local addresses
    "git://localhost/team/shop.git",
    "/var/repos/shop",
    "https://127-0-0-1.example.com/shop.git",
    "https://cafe.face/shop.git",
]


@pytest.mark.parametrize(("url", "kind"), LOCAL_HTTP)
def test_it_refuses_http_urls_to_local_addresses(url, kind, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = False
    with pytest.raises(ValueError, match=f"{kind} address of the worker itself") as raised:
        check_repository_url_safety(url)
    assert "MERGEABLE_ALLOW_PRIVATE_REPOSITORIES=true" in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(("url", "kind"), LOCAL_HTTP)
def test_it_allows_local_addresses_when_the_setting_says_so(url, kind, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = True
    check_repository_url_safety(url)


@pytest.mark.parametrize("url", DASHED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_it_refuses_a_path_segment_starting_with_a_dash(url, allow_private):
    with pytest.raises(ValueError, match="segment starting with '-'"):
        check_repository_url_safety(url, allow_private=allow_private)


@pytest.mark.parametrize("url", ACCEPTED)
def test_it_accepts_ordinary_repository_urls(url, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = False
    check_repository_url_safety(url)


def test_it_names_a_malformed_host_clearly():
    with pytest.raises(ValueError, match="host is not a valid address"):
        check_repository_url_safety("http://[::1/shop.git", allow_private=False)
