"""Callbacks: the outcome of a job posted to a URL by the worker that ran it.

``Job.dispatch(...).callback(url, headers={...})`` posts when the job completes,
``.failure_callback(url, headers={...})`` when it fails for good. The worker signs each post
with its ``callback_secret``; receivers check it with :func:`verify_callback`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import _core

__all__ = ["CallbackStatus", "verify_callback", "SIGNATURE_HEADER", "JOB_ID_HEADER"]

#: The header that carries the signature: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.
SIGNATURE_HEADER = "Fastjobs-Signature"
#: The header that carries the job's id (a receiver can drop a post it saw already).
JOB_ID_HEADER = "Fastjobs-Job-Id"

#: Headers fastjobs or the HTTP client set: a callback's headers cannot name them (nor any
#: ``Fastjobs-`` header).
RESERVED_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "host", "connection", "user-agent"})
MAX_URL = 2048
MAX_HEADERS = 32
MAX_HEADER_VALUE = 8192

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


def check_callback(url: Any, headers: Any, what: str) -> dict[str, Any]:
    """A callback as the job's options carry it: ``{"url", "headers"}`` (headers left out when
    there are none). Raises ``TypeError`` or ``ValueError`` naming the problem."""
    if not isinstance(url, str):
        raise TypeError(f"{what} URL must be a str, got {type(url).__name__}")
    if len(url) > MAX_URL:
        raise ValueError(f"{what} URL must be at most {MAX_URL} characters, got {len(url)}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"{what} URL must not hold spaces or control characters, got {url!r}")
    try:
        _core.check_callback_url(url)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    spec: dict[str, Any] = {"url": url}
    if headers is None:
        return spec
    if not isinstance(headers, Mapping):
        raise TypeError(f"{what} headers must be a dict of str to str, got {type(headers).__name__}")
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"{what} takes at most {MAX_HEADERS} headers, got {len(headers)}")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"{what} header names must be str, got {type(name).__name__} {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"{what} header {name!r} must have a str value, got {type(value).__name__}")
        if not _TOKEN.match(name):
            raise ValueError(f"{what} header name {name!r} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("fastjobs-"):
            raise ValueError(f"{what} header {name!r} is set by fastjobs (Content-Type, User-Agent, Fastjobs-Signature, "
                             "Fastjobs-Job-Id) or the HTTP client: leave it out")
        if lower in seen:
            raise ValueError(f"{what} header {name!r} is given twice (header names ignore case)")
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE or not _VALUE.match(value):
            raise ValueError(f"{what} header {name!r}: its value must be at most {MAX_HEADER_VALUE} printable ASCII characters "
                             "(no line breaks)")
        out[name] = value
    if out:
        spec["headers"] = out
    return spec


def verify_callback(secret: str | bytes, body: bytes, header: str | None, tolerance: float = 300) -> bool:
    """Whether a callback's ``Fastjobs-Signature`` ``header`` signs ``body`` (the request's
    raw bytes, before any JSON parsing) with ``secret`` (the worker's ``callback_secret``),
    at a time no more than ``tolerance`` seconds from now (older posts are refused: a replay).
    Several ``v1=`` entries are accepted (any one may match). False for a missing or malformed
    header."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or not secret:
        raise TypeError("secret must be a non-empty str or bytes")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be the request's raw bytes, got {type(body).__name__}")
    if header is None:
        return False
    if not isinstance(header, str):
        raise TypeError(f"header must be a str, got {type(header).__name__}")
    t: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            t = value
        elif key == "v1":
            signatures.append(value)
    if t is None or not t.isdigit() or not signatures:
        return False
    if abs(time.time() - int(t)) > tolerance:
        return False
    expected = hmac.new(secret, t.encode() + b"." + bytes(body), hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


@dataclass(frozen=True)
class CallbackStatus:
    """How a job's callback went, as the worker that posted it recorded it (kept as long as
    results). ``state`` is ``"retrying"`` (a try failed, another comes), ``"delivered"`` (a
    2xx answer) or ``"failed"`` (given up: a refusal, the last try failed, or the worker
    stopped first); ``event`` says which callback: ``"completed"`` or ``"failed"``."""

    state: str
    event: str
    url: str
    attempts: int
    #: The last answer's HTTP status, None when there was none (a connection error).
    status_code: int | None
    #: What went wrong last, None once delivered.
    error: str | None
    at: datetime


def parse_status(fields: dict[str, bytes] | None) -> CallbackStatus | None:
    if not fields:
        return None
    text = {k: v.decode("utf-8", "replace") for k, v in fields.items()}
    code = text.get("code", "")
    return CallbackStatus(
        state=text.get("state", ""),
        event=text.get("event", ""),
        url=text.get("url", ""),
        attempts=int(text.get("attempts") or 0),
        status_code=int(code) if code.isdigit() else None,
        error=text.get("error") or None,
        at=datetime.fromtimestamp(int(text.get("at") or 0) / 1000, timezone.utc),
    )
