"""Local checks of a webhook URL and its headers, before anything is sent to 360dialog.

The rules are 360dialog's (Cloud API): HTTPS only, no ``_`` in any host label, no explicit
port; header names may not contain ``_`` either. Meta caps callback URLs at 200 characters,
so a longer URL only draws a warning. Each violation is one line a person can act on.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

__all__ = ["Finding", "check_api_base_url", "check_header", "check_webhook_url", "errors"]

#: Above this length Meta refuses callback URLs; 360dialog documents no limit, hence a warning.
MAX_URL_LENGTH = 200

# RFC 9110 token characters, without "_" which 360dialog rejects in header names.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class Finding:
    """One problem found: an ``error`` stops the command, a ``warning`` is only printed."""

    level: Literal["error", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def errors(findings: list[Finding]) -> list[Finding]:
    """The findings that must stop the command."""
    return [f for f in findings if f.level == "error"]


def _split(url: str) -> tuple[urllib.parse.SplitResult | None, list[Finding]]:
    if url != url.strip() or any(c.isspace() for c in url):
        return None, [Finding("error", f"the URL contains whitespace: {url!r}")]
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        return None, [Finding("error", f"the URL cannot be parsed ({exc}): {url!r}")]
    if not parts.hostname:
        return None, [Finding("error", f"the URL has no host: {url!r}")]
    return parts, []


def check_webhook_url(url: str) -> list[Finding]:
    """Check a URL that 360dialog will deliver to; an empty list means it is fine."""
    parts, findings = _split(url)
    if parts is None:
        return findings
    if parts.scheme.lower() != "https":
        findings.append(
            Finding("error", f"the URL must use https:// (360dialog only delivers over HTTPS), not {parts.scheme}://")
        )
    host = parts.hostname or ""
    for label in host.split("."):
        if "_" in label:
            findings.append(Finding("error", f"the host label {label!r} contains '_', which 360dialog rejects"))
    if parts.port is not None:
        findings.append(
            Finding("error", f"the URL names a port (:{parts.port}); 360dialog rejects explicit ports: serve on 443")
        )
    if parts.username is not None or parts.password is not None:
        findings.append(Finding("error", "the URL carries credentials (user:pass@); use --basic-auth instead"))
    if parts.fragment:
        findings.append(Finding("warning", "the URL has a #fragment, which is never sent to the server"))
    if len(url) > MAX_URL_LENGTH:
        findings.append(
            Finding(
                "warning", f"the URL is {len(url)} characters long; Meta refuses callback URLs above {MAX_URL_LENGTH}"
            )
        )
    return findings


def check_header(name: str, value: str) -> list[Finding]:
    """Check one custom header that 360dialog will send with every delivery."""
    findings: list[Finding] = []
    if not name:
        return [Finding("error", "a header has an empty name (expected NAME:VALUE)")]
    if "_" in name:
        findings.append(Finding("error", f"the header name {name!r} contains '_', which 360dialog rejects; use '-'"))
    elif not _HEADER_NAME.match(name):
        findings.append(Finding("error", f"the header name {name!r} has characters not allowed in an HTTP header name"))
    if any(c in value for c in "\r\n\0"):
        findings.append(Finding("error", f"the value of header {name!r} contains a line break or NUL"))
    return findings


def check_api_base_url(url: str) -> list[Finding]:
    """Check the API host. Plain http is allowed here (a local test server), never for webhooks."""
    parts, findings = _split(url)
    if parts is None:
        return findings
    if parts.scheme.lower() not in ("https", "http"):
        findings.append(Finding("error", f"the base URL must use https://, not {parts.scheme}://"))
    if parts.query or parts.fragment:
        findings.append(Finding("error", "the base URL must not have a query or fragment"))
    return findings
