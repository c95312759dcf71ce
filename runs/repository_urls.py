"""Repository URLs that would turn git against the worker: an option in disguise, or a local address.

`check_repository_url_safety` is one step of `workspace.validate_repository_url`, for two things
that look like valid URLs:

- A path segment starting with "-" (also spelled %2D): git and ssh hand the path on as an
  argument, where a leading dash can be read as an option.
- An http(s) URL to a loopback or link-local address (127.0.0.0/8, ::1, localhost, 169.254.0.0/16,
  fe80::/10, 0.0.0.0, and the same addresses spelled as IPv4-mapped IPv6 or as the short and
  numeric IPv4 forms that curl accepts, such as 127.1 or 2130706433). Git would fetch from services
  that listen only on the worker's own machine, or from a cloud's metadata service at
  169.254.169.254, and show their answers in its errors. Set MERGEABLE_ALLOW_PRIVATE_REPOSITORIES
  to allow it, e.g. for a git server on the same machine.

Host names are not resolved: a name is judged by what it says, not by what DNS answers today.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import unquote, urlsplit

from django.conf import settings

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(\[[^\]]*\]|[^:/\[]+):(?P<path>.*)\Z")
_UNSPECIFIED_V4 = ipaddress.ip_network("0.0.0.0/8")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def check_repository_url_safety(url: str, *, allow_private: bool | None = None) -> None:
    """Raise ValueError naming the problem if `url` has a path segment starting with "-" or is an
    http(s) URL to a loopback or link-local address (unless private repositories are allowed;
    default: the MERGEABLE_ALLOW_PRIVATE_REPOSITORIES setting). The message never quotes the URL,
    which may hold credentials."""
    if allow_private is None:
        allow_private = settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES
    scheme, host, path = _parts(url)
    for segment in path.split("/"):
        if unquote(segment).startswith("-"):
            raise ValueError(
                f"The repository path has a segment starting with '-' ({segment[:60]!r}), "
                "which git or ssh could read as an option."
            )
    if scheme in ("http", "https") and host and not allow_private:
        kind = _local_address_kind(host)
        if kind:
            raise ValueError(
                f"The repository URL's host {host[:100]!r} is {kind} of the worker itself. Set "
                "MERGEABLE_ALLOW_PRIVATE_REPOSITORIES=true to allow repositories served there."
            )


def _parts(url: str) -> tuple[str, str, str]:
    """(scheme, host, path) of a URL, an scp-like `user@host:path` or a local path."""
    if match := _SCHEME.match(url):
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            raise ValueError("The repository URL's host is not a valid address.") from None
        return match.group(1).lower(), host, parts.path
    if not url.startswith("/") and (scp := _SCP_LIKE.match(url)):
        return "ssh", "", scp["path"]
    return "", "", url


def _local_address_kind(host: str) -> str:
    """What `host` names, when it is a local address: "a loopback address", "a link-local
    address" or "the unspecified address"; "" otherwise."""
    host = unquote(host).lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback address"
    address = _ip_address(host)
    if address is None:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _IPV4_COMPATIBLE and int(address) > 1:  # ::127.0.0.1 (deprecated form)
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _UNSPECIFIED_V4
    ):
        return "the unspecified address"
    return ""


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # The forms inet_aton and so curl also take as IPv4: 127.1, 0x7f000001, 2130706433, 0177.1.
    if not re.fullmatch(r"[0-9a-fx.]+", host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
