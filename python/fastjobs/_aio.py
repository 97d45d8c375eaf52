"""Settles asyncio futures on behalf of the Rust I/O runtime (see rust/py/bridge.rs)."""

from __future__ import annotations

import asyncio
from typing import Any


def resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # cancelled while the engine worked
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
