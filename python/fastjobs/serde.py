"""Payloads and results are JSON (orjson). A value that cannot be serialized raises
``TypeError`` naming its type and where it sits in the payload."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "loads"]

loads = orjson.loads
_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any, what: str = "payload") -> bytes:
    try:
        return orjson.dumps(value, option=_OPTS)
    except TypeError:
        raise TypeError(_explain(value, what)) from None


def _explain(value: Any, where: str) -> str:
    found = _find(value, where, 0)
    if found is None:
        return f"{where} cannot be serialized to JSON"
    path, bad = found
    return f"{path} is of type {type(bad).__module__}.{type(bad).__qualname__}, which cannot be serialized to JSON"


def _find(value: Any, path: str, depth: int) -> tuple[str, Any] | None:
    if depth > 254:
        return path, value
    if isinstance(value, dict):
        for k, v in value.items():
            hit = _find(v, f"{path}[{k!r}]", depth + 1)
            if hit:
                return hit
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            hit = _find(v, f"{path}[{i}]", depth + 1)
            if hit:
                return hit
        return None
    try:
        orjson.dumps(value, option=_OPTS)
    except TypeError:
        return path, value
    return None


def loads_error(raw: bytes) -> dict[str, Any]:
    """A stored error (JSON written by the engine); one that is not (written by something
    else) is reported as such, with its bytes, rather than raising."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    return {"type": "DecodeError", "message": f"the stored error is not JSON fastjobs wrote ({len(raw)} bytes)", "traceback": "",
            "raw": raw.decode("utf-8", "replace")}


def loads_result(raw: bytes, job_id: str) -> Any:
    """A stored return value; one that is not JSON (written by something else) raises
    ``StoreError`` naming the job."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        from .errors import StoreError

        raise StoreError(f"the result stored for job {job_id} is not JSON ({len(raw)} bytes)") from None
