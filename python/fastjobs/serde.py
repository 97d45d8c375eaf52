"""Payloads and results are JSON, as orjson writes it. A value that cannot be serialized
raises ``TypeError`` naming its type and where it sits in the payload; so does a NaN or an
infinity (float or numpy), which orjson would write as ``null``."""

from __future__ import annotations

import enum
import math
import sys
from typing import Any

import orjson

from ._core import _dumps_plain, _surely_finite

__all__ = ["dumps", "loads"]

loads = orjson.loads
_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any, what: str = "payload") -> bytes:
    # The plain JSON types (finite floats only) are written by the engine, as dispatch_many
    # writes them: orjson's bytes exactly (tests/test_payload_fuzz.py), and no NaN to look for.
    data = _dumps_plain(value)
    if data is not None:
        return data
    try:
        data = orjson.dumps(value, option=_OPTS)
    except TypeError:
        raise TypeError(_explain(value, what)) from None
    if not _surely_finite(data, value):
        _refuse_nonfinite(value, what)
    return data


def dumps_other(value: Any, what: str = "payload") -> bytes:
    """``dumps`` of a value the engine's writer has refused already: dispatch_many's fallback."""
    try:
        data = orjson.dumps(value, option=_OPTS)
    except TypeError:
        raise TypeError(_explain(value, what)) from None
    if not _surely_finite(data, value):
        _refuse_nonfinite(value, what)
    return data


def _refuse_nonfinite(value: Any, what: str) -> None:
    """orjson writes NaN and ±inf as null, as it writes None. When the engine cannot tell
    them apart (`_surely_finite`: no null in the output, or no non-finite float among the
    types it knows), the value is walked here, and a bad float found is raised with its path."""
    try:
        bad = _nonfinite(value)
    except RecursionError:  # tuples, which orjson nests without limit
        raise TypeError(f"{what} nests too deeply to be checked for NaN and infinities") from None
    if bad is not None:
        raise TypeError(_explain_nonfinite(bad, what))


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


# ---- NaN and infinities ----
#
# `_nonfinite` walks a value that orjson has serialized, the way orjson does (dicts and their
# subclasses, lists and their subclasses, tuples, dataclasses, enums, numpy), and returns the
# first non-finite float as (steps, value, is_key): the steps of its path, innermost first (a
# path string is made only for the error), and whether it is a dict key (orjson writes a
# non-finite float key as "null").

_Hit = tuple[list[str], Any, bool]
_LEAVES = frozenset({str, int, bool, type(None)})
_isfinite = math.isfinite


def _nonfinite(value: Any) -> _Hit | None:
    t = type(value)
    if t is float:
        return None if _isfinite(value) else ([], value, False)
    if t is dict or isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str and _nonfinite_key(k):
                return [], k, True
            tv = type(v)
            if tv in _LEAVES:
                continue
            if tv is float:
                if _isfinite(v):
                    continue
                return [f"[{k!r}]"], v, False
            hit = _nonfinite(v)
            if hit is not None:
                hit[0].append(f"[{k!r}]")
                return hit
        return None
    if t is list or t is tuple or isinstance(value, list):
        for i, v in enumerate(value):
            tv = type(v)
            if tv in _LEAVES:
                continue
            if tv is float:
                if _isfinite(v):
                    continue
                return [f"[{i}]"], v, False
            hit = _nonfinite(v)
            if hit is not None:
                hit[0].append(f"[{i}]")
                return hit
        return None
    if t in _LEAVES:
        return None
    return _nonfinite_other(value)


def _nonfinite_key(k: Any) -> bool:
    if isinstance(k, enum.Enum):
        k = k.value
    return isinstance(k, float) and not _isfinite(k)


def _nonfinite_other(value: Any) -> _Hit | None:
    """The rarer types orjson serializes with floats inside."""
    if isinstance(value, float):  # numpy.float64 (orjson refuses other float subclasses)
        return None if _isfinite(value) else ([], value, False)
    if isinstance(value, enum.Enum):
        inner = value.value
        if isinstance(inner, float) and not _isfinite(inner):
            return [], value, False
        return _nonfinite(inner)
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None and not isinstance(value, type):
        return _nonfinite_dataclass(value, fields)
    if type(value).__module__ == "numpy":
        return _nonfinite_numpy(value)
    return None


def _nonfinite_dataclass(value: Any, fields: dict[str, Any]) -> _Hit | None:
    # As orjson: the instance's __dict__ when it has one and its class no __slots__, else the
    # fields; names starting with an underscore are left out.
    attrs = getattr(value, "__dict__", None)
    if attrs is None or "__slots__" in type(value).__dict__:
        import dataclasses

        attrs = {name: getattr(value, name) for name, f in fields.items() if f._field_type is dataclasses._FIELD}  # type: ignore[attr-defined]
    for name, v in attrs.items():
        if isinstance(name, str) and name.startswith("_"):
            continue
        hit = _nonfinite(v)
        if hit is not None:
            hit[0].append(f".{name}")
            return hit
    return None


def _nonfinite_numpy(value: Any) -> _Hit | None:
    np = sys.modules["numpy"]
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            return None
        bad = np.argwhere(~np.isfinite(value))
        if not len(bad):
            return None
        at = tuple(int(i) for i in bad[0])
        return [f"[{i}]" for i in reversed(at)], value[at], False
    if isinstance(value, np.floating) and not _isfinite(value):
        return [], value, False
    return None


def _explain_nonfinite(hit: _Hit, where: str) -> str:
    steps, bad, is_key = hit
    path = where + "".join(reversed(steps))
    if is_key:
        return f"{path} has a key that is {_describe(bad)}, which JSON cannot represent"
    return f"{path} is {_describe(bad)}, which JSON cannot represent"


def _describe(bad: Any) -> str:
    if isinstance(bad, enum.Enum):
        return f"{type(bad).__qualname__}.{bad.name}, whose value is {_describe(bad.value)}"
    x = float(bad)
    word = "NaN" if x != x else ("inf" if x > 0 else "-inf")
    t = type(bad)
    return f"a float {word}" if t is float else f"a {t.__module__}.{t.__qualname__} {word}"


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
