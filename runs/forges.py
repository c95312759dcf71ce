"""Issue and merge-request texts from a forge (GitHub or GitLab), through their REST APIs.

Optional everywhere: a repository without a forge, a forge that does not answer, or a reference
that is not there leaves a draft with its commit message. Commit messages reference issues as
`#123` (`Fixes #123` closes it) and GitLab merge requests as `!45`. The token is sent only in a
request header, never in a URL, a log line or an error message.

    github: https://github.com/OWNER/REPO  -> https://api.github.com/repos/OWNER/REPO/issues/N
            https://HOST/OWNER/REPO        -> https://HOST/api/v3/repos/OWNER/REPO/issues/N
    gitlab: https://HOST/GROUP/PROJECT     -> https://HOST/api/v4/projects/GROUP%2FPROJECT/issues/N
                                              (and .../merge_requests/N for `!N`)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

TIMEOUT_S = 10.0
TEXT_LIMIT = 20_000
# `Fixes #12`, `closes #3`, `Resolves: #7`: the change's reason for being.
_CLOSING = re.compile(r"\b(?:fix(?:e[sd])?|close[sd]?|resolve[sd]?)\s*:?\s+([#!])(\d+)\b", re.I)
_REFERENCE = re.compile(r"(?<![\w&/])([#!])(\d+)\b")


class ForgeError(Exception):
    """The forge could not give the text; the message says why (never holds the token)."""


@dataclass(frozen=True)
class Reference:
    sigil: str  # "#" for an issue (or a GitHub pull request), "!" for a GitLab merge request
    number: int
    closing: bool = False

    def __str__(self) -> str:
        return f"{self.sigil}{self.number}"


@dataclass(frozen=True)
class IssueText:
    reference: Reference
    title: str
    body: str


def url_problem(url: str) -> str:
    """Why `url` cannot be a forge project's address, phrased to follow it; "" if it can."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return "it holds credentials: give the token in its own field"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "it must be an https:// address such as https://github.com/acme/shop"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return "plain http is allowed only to this machine (127.0.0.1): use https"
    if len([part for part in parts.path.split("/") if part]) < 2:
        return "it must name the project, as in https://github.com/acme/shop"
    if parts.query or parts.fragment:
        return "it must be the project's address, without ? or #"
    return ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def references(message: str) -> list[Reference]:
    """The references in a commit message, closing ones first, each once."""
    closing = [Reference(s, int(n), True) for s, n in _CLOSING.findall(message)]
    seen = {(r.sigil, r.number) for r in closing}
    mentioned = []
    for sigil, number in _REFERENCE.findall(message):
        if (sigil, int(number)) not in seen:
            seen.add((sigil, int(number)))
            mentioned.append(Reference(sigil, int(number)))
    return closing + mentioned


def api_url(forge: str, project_url: str, reference: Reference) -> str:
    parts = urlsplit(project_url.rstrip("/").removesuffix(".git"))
    project = parts.path.strip("/")
    if forge == "github":
        if reference.sigil != "#":
            raise ForgeError(f"GitHub has no {reference}: only #N references")
        if parts.hostname == "github.com":
            base = "https://api.github.com"
        else:
            base = f"{parts.scheme}://{parts.netloc}/api/v3"
        return f"{base}/repos/{project}/issues/{reference.number}"
    if forge == "gitlab":
        kind = "merge_requests" if reference.sigil == "!" else "issues"
        base = f"{parts.scheme}://{parts.netloc}/api/v4"
        return f"{base}/projects/{quote(project, safe='')}/{kind}/{reference.number}"
    raise ForgeError(f"unknown forge {forge!r}")


def fetch(forge: str, project_url: str, token: str, reference: Reference) -> IssueText:
    """The title and description of `reference`. Raises ForgeError."""
    if problem := url_problem(project_url):
        raise ForgeError(f"the forge URL is not allowed: {problem}")
    url = api_url(forge, project_url, reference)
    headers = {"Accept": "application/json", "User-Agent": "Mergeable"}
    if token and forge == "github":
        headers["Authorization"] = f"Bearer {token}"
    elif token:
        headers["PRIVATE-TOKEN"] = token
    try:
        response = httpx.get(url, headers=headers, timeout=TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ForgeError(
            f"the forge did not answer for {reference}: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise ForgeError(f"the forge answered {response.status_code} for {reference}")
    try:
        data = response.json()
    except ValueError:
        raise ForgeError(f"the forge's answer for {reference} is not JSON") from None
    if not isinstance(data, dict):
        raise ForgeError(f"the forge's answer for {reference} is not an object")
    body = data.get("body") if forge == "github" else data.get("description")
    title = data.get("title")
    return IssueText(
        reference=reference,
        title=title[:300] if isinstance(title, str) else "",
        body=body[:TEXT_LIMIT] if isinstance(body, str) else "",
    )


def first_text(
    forge: str, project_url: str, token: str, message: str
) -> tuple[IssueText | None, list[str]]:
    """The first referenced issue whose text the forge gives, and the problems met on the way."""
    problems = []
    if not (forge and project_url):
        return None, problems
    for reference in references(message)[:5]:
        try:
            found = fetch(forge, project_url, token, reference)
        except ForgeError as exc:
            problems.append(str(exc))
            continue
        if found.title or found.body:
            return found, problems
    return None, problems
