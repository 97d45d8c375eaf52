"""Differential test of the engine's serializer (rust/py/payloads.rs, reached here through
``_core._serialize_payloads`` as dispatch_many runs it and ``_core._dumps_plain`` as one
dispatch does; no Redis) against orjson: hypothesis makes lists of ~100 payloads each,
100,000 in all, and every payload must come out of the engine as the bytes
``orjson.dumps(v, option=serde._OPTS)`` makes, or raise TypeError where orjson does; and a
payload holding a NaN or an infinity, which orjson would write as null, must be refused by
every path."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import random
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastjobs import _core, serde

# ---- what the payloads are made of ----


class MyDict(dict):  # type: ignore[type-arg]
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


class MyTuple(tuple):  # type: ignore[type-arg]  # orjson refuses tuple subclasses
    pass


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):  # orjson refuses float subclasses
    pass


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


class Ratio(enum.Enum):
    HALF = 0.5
    NAN = float("nan")
    INF = float("inf")


@dataclasses.dataclass
class Point:
    x: Any
    _hidden: Any = None


def _float_from_bits(bits: int) -> float:
    return float(struct.unpack("<d", bits.to_bytes(8, "little"))[0])


NAN, INF = float("nan"), float("inf")
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e16, 1e15, 9007199254740993.0, 1e-7, 1e-5, 123456789.123, 1e308, -1e308,
                  1.7976931348623157e308, 5e-324, -5e-324, 2.2250738585072014e-308, 1e22, 1e21, 1e-324, NAN, INF, -INF]
SPECIAL_INTS = [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 10**30, -(10**30)]
# Quotes, backslash, every control byte class, DEL, the JSON-in-JS line separators, 2-, 3- and
# 4-byte UTF-8, and lone surrogates (orjson refuses a str holding one).
SPECIAL_CHARS = ['"', "\\", "/", "\x00", "\x01", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1f", " ", "\x7f", "\x80",
                 "é", "\u2028", "\u2029", "中", "\uffff", "😀", "\U0010ffff", "\ud800", "\udbff", "\udc00", "\udfff"]

chars = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS), st.characters(categories=["Cs"]))
short_text = st.text(chars, max_size=12)
# Long strings (the serializer's escape check runs over all bytes at once): a short one repeated.
long_text = st.builds(lambda s, n: s * n, st.text(chars, min_size=1, max_size=6), st.integers(10, 120))
text = st.one_of(short_text, short_text, long_text)

floats = st.one_of(
    st.floats(),  # NaN, ±inf, -0.0, subnormals included
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_FLOATS),
    st.integers(0, 2**64 - 1).map(_float_from_bits),  # every bit pattern, NaNs with payloads too
)
ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(), st.integers(-(2**70), 2**70), st.sampled_from(SPECIAL_INTS))

# Leaves outside the plain types: the serializer hands the payload to the fallback (or orjson refuses them).
others = st.one_of(
    st.sampled_from([Colour.RED, Colour.BLUE, Level.LOW, Ratio.HALF, Ratio.NAN, Ratio.INF, datetime.date(2026, 1, 2),
                     datetime.datetime(2026, 1, 2, 3, 4, 5, 6), uuid.UUID(int=7), b"bytes", object(), {1, 2}, 1j]),
    text.map(MyStr),
    ints.map(MyInt),
    floats.map(MyFloat),
    st.builds(Point, st.one_of(st.none(), floats, ints)),
)
leaves = st.one_of(st.none(), st.booleans(), ints, ints, floats, floats, text, text, text, others)

keys = st.one_of(
    text, text, text,
    text.map(MyStr), ints, floats, st.booleans(), st.none(),
    st.sampled_from([Colour.RED, Level.LOW, Ratio.HALF, Ratio.NAN, datetime.date(2026, 1, 2), uuid.UUID(int=9), (1, 2), MyFloat(1.5)]),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    lists = st.lists(children, max_size=6)
    str_keyed = st.dictionaries(text, children, max_size=6)
    return st.one_of(
        lists, lists, lists.map(tuple), str_keyed, str_keyed,
        st.dictionaries(keys, children, max_size=5),
        lists.map(MyList), lists.map(MyTuple), str_keyed.map(MyDict), str_keyed.map(collections.OrderedDict),
    )


values = st.recursive(leaves, _containers, max_leaves=16)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """Nesting around orjson's limit (254 lists or dicts in all, with a scalar inside), and past it."""
    depth = draw(st.one_of(st.integers(250, 258), st.integers(200, 320)))
    kinds = draw(st.lists(st.sampled_from(["list", "dict", "tuple", "mydict"]), min_size=1, max_size=3))
    v = draw(st.one_of(st.none(), st.integers(0, 9), st.just(NAN), st.just([]), st.just({}), st.just(()), st.just([1])))
    for i in range(depth):
        kind = kinds[i % len(kinds)]
        v = [v] if kind == "list" else (v,) if kind == "tuple" else {"k": v} if kind == "dict" else MyDict(k=v)
    return v


# Hypothesis draws some 2 ms of work per nested value on a slow machine: 100,000 of them would
# take minutes. So each example is ~100 payloads of which up to DRAWN are drawn by hypothesis
# (structure-aware, shrinkable), the rest made from a hypothesis-drawn RNG state and mix by the fast
# generator below, over the same kinds of values; a failure names the payload itself.

PER_EXAMPLE = 100
DRAWN = 4
EXAMPLES = 1000  # 100,000 payloads in all

_PLAIN_KEYS = ["", "a", "id", "k\"é", "null", "\u2028", "😀", "x" * 40]
_OTHERS: list[Callable[[random.Random], Any]] = [
    lambda r: r.choice([Colour.RED, Colour.BLUE, Level.LOW, Ratio.HALF, Ratio.NAN, Ratio.INF]),
    lambda r: r.choice([datetime.date(2026, 1, 2), datetime.datetime(2026, 1, 2, 3, 4, 5, 6), uuid.UUID(int=r.getrandbits(128))]),
    lambda r: r.choice([b"bytes", object(), {1, 2}, 1j, MyFloat(r.random())]),
    lambda r: MyStr(_random_str(r)),
    lambda r: MyInt(_random_int(r)),
    lambda r: Point(_random_float(r) if r.random() < 0.5 else None),
]


def _random_int(r: random.Random) -> int:
    k = r.random()
    if k < 0.2:
        return r.choice(SPECIAL_INTS)
    if k < 0.9:
        return r.randrange(-(2 ** r.randrange(1, 64)), 2 ** r.randrange(1, 64))
    return r.randrange(-(2**70), 2**70)  # mostly beyond 64 bits: orjson refuses


def _random_float(r: random.Random) -> float:
    k = r.random()
    if k < 0.25:
        return r.choice(SPECIAL_FLOATS)
    if k < 0.6:
        return _float_from_bits(r.getrandbits(64))  # NaN or inf about once in 2,000
    if k < 0.8:
        return r.uniform(-1e6, 1e6)
    return r.random() * 10.0 ** r.randrange(-320, 309)


def _random_char(r: random.Random) -> str:
    k = r.random()
    if k < 0.5:
        return chr(r.randrange(0x20, 0x7F))
    if k < 0.8:
        return r.choice(SPECIAL_CHARS)
    return chr(r.randrange(0x110000))  # surrogates among them


def _random_str(r: random.Random) -> str:
    s = "".join(_random_char(r) for _ in range(r.randrange(12)))
    return s * r.randrange(10, 120) if s and r.random() < 0.1 else s


def _random_key(r: random.Random) -> Any:
    k = r.random()
    if k < 0.5:
        return _random_str(r)
    return r.choice([MyStr("s"), None, True, False, Colour.RED, Level.LOW, Ratio.HALF, Ratio.NAN, datetime.date(2026, 1, 2),
                     uuid.UUID(int=9), (1, 2), MyFloat(1.5), _random_int(r), _random_float(r), _random_int(r), _random_float(r)])


def _random_value(r: random.Random, mix: tuple[float, float], depth: int = 0) -> Any:
    nest, odd = mix
    k = r.random()
    if depth < 5 and k < nest:
        n = r.randrange(7)
        kind = r.randrange(10)
        if kind < 3:
            return [_random_value(r, mix, depth + 1) for _ in range(n)]
        if kind == 3:
            return tuple(_random_value(r, mix, depth + 1) for _ in range(n))
        if kind < 7:
            return {r.choice(_PLAIN_KEYS) if r.random() < 0.5 else _random_str(r): _random_value(r, mix, depth + 1) for _ in range(n)}
        if kind == 7:
            return {_random_key(r): _random_value(r, mix, depth + 1) for _ in range(n)}
        items = [_random_value(r, mix, depth + 1) for _ in range(n)]
        return r.choice([MyList(items), MyTuple(items), MyDict(zip(_PLAIN_KEYS, items)), collections.OrderedDict(zip(_PLAIN_KEYS, items))])
    k = r.random()
    if k < odd:
        return r.choice(_OTHERS)(r)
    k = r.randrange(8)
    if k == 0:
        return r.choice([None, True, False])
    if k < 3:
        return _random_int(r)
    if k < 5:
        return _random_float(r)
    return _random_str(r)


@st.composite
def payload_lists(draw: st.DrawFn) -> list[Any]:
    out = draw(st.lists(values, max_size=DRAWN))
    state = draw(st.integers(0, 2**64 - 1))
    mix = (draw(st.sampled_from([0.1, 0.3, 0.5, 0.7])), draw(st.sampled_from([0.0, 0.02, 0.1, 0.3])))
    r = random.Random(state)
    out += [_random_value(r, mix) for _ in range(PER_EXAMPLE - len(out))]
    extra = draw(st.one_of(st.none(), st.none(), deep()))
    if extra is not None:
        out[draw(st.integers(0, len(out) - 1))] = extra
    return out


# ---- the test ----

ERROR = b"\x00error"  # what the recording fallback returns for a refused payload (never valid JSON)


def _or_error(dumps: Callable[[Any], bytes], v: Any) -> bytes:
    try:
        return dumps(v)
    except TypeError:
        return ERROR


def _orjson(v: Any) -> bytes:
    return orjson.dumps(v, option=serde._OPTS)


def test_engine_serializer_matches_orjson() -> None:
    stats: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(payload_lists())
    def check(payloads: list[Any]) -> None:
        handed: list[int] = []

        def fallback(v: Any) -> bytes:
            handed.append(1)
            return _or_error(_orjson, v)

        # 1. Byte for byte what orjson writes, or handed to the fallback where orjson refuses.
        got = _core._serialize_payloads(payloads, fallback)
        for i, (v, raw) in enumerate(zip(payloads, got)):
            want = _or_error(_orjson, v)
            assert raw == want, f"payload {i}: {v!r}: engine wrote {raw!r}, orjson {want!r}"
            if want is ERROR:
                stats["refused by orjson"] += 1
                # Refused by the fallback: the engine raises TypeError, naming the index.
                with pytest.raises(TypeError, match=f"^payload at index {i}: "):
                    _core._serialize_payloads([0] * i + [v], _orjson)
        stats["payloads"] += len(payloads)
        stats["written by the engine"] += len(payloads) - len(handed)

        # 2. As dispatch_many runs it (serde.dumps_other behind), and as one dispatch does
        # (serde.dumps, the engine's writer first): orjson's bytes, or TypeError where orjson
        # refuses, and where the value holds a NaN or an infinity (found by serde's walk in
        # Python, which orjson would write as null).
        got = _core._serialize_payloads(payloads, lambda v: _or_error(serde.dumps_other, v))
        for i, (v, raw) in enumerate(zip(payloads, got)):
            want = _or_error(_orjson, v)
            if want is not ERROR and serde._nonfinite(v) is not None:
                want = ERROR
                stats["refused for NaN or inf"] += 1
            assert raw == want, f"payload {i}: {v!r}: engine wrote {raw!r}, expected {want!r}"
            single = _or_error(serde.dumps, v)
            assert single == want, f"payload {i}: {v!r}: serde.dumps wrote {single!r}, expected {want!r}"
            plain = _core._dumps_plain(v)  # None: handed to orjson
            assert plain is None or plain == want, f"payload {i}: {v!r}: _dumps_plain wrote {plain!r}, expected {want!r}"
            stats["plain"] += plain is not None

    check()
    elapsed = time.monotonic() - started
    print(f"\n{dict(stats)} in {elapsed:.1f} s")
    assert stats["payloads"] >= 100_000
    # The engine must have written most payloads itself (else this tests orjson against itself),
    # and each kind of refusal must have been met.
    assert stats["written by the engine"] >= stats["payloads"] // 4
    assert stats["plain"] == stats["written by the engine"]  # one writer for both paths
    assert stats["refused by orjson"] > 100 and stats["refused for NaN or inf"] > 100
