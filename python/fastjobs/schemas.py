"""Typed payloads and results: a job whose payload (or result) type is a pydantic model, a
dataclass or a TypedDict has it checked at dispatch and handed to ``process`` as that type.

``Job.__init_subclass__`` finds the types once per class (``declared``) and stores the
functions the dispatch and the worker call (``_dump_payload``, ``_load_payload``,
``_dump_result``): for a class without types they are ``serde.dumps`` and ``serde.loads``
themselves, so an untyped job pays nothing. pydantic is imported only through a model's
own methods (its module imported it already); dataclasses and TypedDicts are checked here.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from . import serde
from .errors import PayloadValidationError, ResultValidationError

__all__ = ["Schema", "declared", "schema_for"]

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)


class _Invalid(Exception):
    """A value that does not fit its type: the path where, and what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump")


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_typeddict(tp: Any) -> bool:
    return typing.is_typeddict(tp) or (isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__"))


def schema_for(tp: Any) -> Schema | None:
    """The schema of a declared type, or None when it is not a pydantic model, a dataclass or
    a TypedDict (the value then travels as plain JSON, unchecked)."""
    if is_pydantic(tp):
        return Schema(tp, "pydantic")
    if is_dataclass_type(tp):
        return Schema(tp, "dataclass")
    if is_typeddict(tp):
        return Schema(tp, "TypedDict")
    return None


class Schema:
    """A payload or result type: ``dump`` checks a value (an instance, or a dict that fits)
    and returns its JSON form; ``load`` turns that JSON back into the type."""

    __slots__ = ("tp", "kind")

    def __init__(self, tp: type, kind: str) -> None:
        self.tp = tp
        self.kind = kind

    def dump(self, value: Any, root: str) -> Any:
        """Raises ``_Invalid`` naming the field path from ``root`` (``payload.items[2].sku``)."""
        if self.kind == "pydantic":
            return _pydantic(self.tp, value, root, load=False)
        return _check(self.tp, value, root, False)

    def load(self, data: Any, root: str) -> Any:
        if self.kind == "pydantic":
            return _pydantic(self.tp, data, root, load=True)
        return _check(self.tp, data, root, True)

    def __repr__(self) -> str:
        return f"<Schema {self.kind} {self.tp.__qualname__}>"


# ---- what a class declares ----


def declared(cls: type) -> tuple[Any, Any]:
    """The payload and result types of a job class: the generic parameters of the ``Job[P, R]``
    it derives from, else the annotations of ``process`` (its payload parameter, its return),
    when they resolve at class creation. A schema type given both ways must be the same."""
    from .job import Job

    generic: tuple[Any, Any] = (None, None)
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is Job:
                args = typing.get_args(base)
                if len(args) == 2:
                    generic = args[0], args[1]
                break
        else:
            continue
        break
    annotated = _annotated(cls.__dict__.get("process") or getattr(cls, "process", None))
    out = []
    for what, g, a in zip(("payload", "result"), generic, annotated):
        gs, as_ = schema_for(g) is not None, schema_for(a) is not None
        if gs and as_ and g is not a:
            raise TypeError(f"{cls.__qualname__}: its {what} type is {g.__qualname__} in Job[...] but {a.__qualname__} in process()")
        out.append(g if gs else (a if as_ else None))
    return out[0], out[1]


def _annotated(process: Any) -> tuple[Any, Any]:
    if process is None:
        return None, None
    fn = getattr(process, "__fastjobs_fn__", None)  # @job: the function's own annotations
    at = 1 if fn is None else 0
    try:
        hints = typing.get_type_hints(fn or process)
        params = list(inspect.signature(fn or process).parameters)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve now (TYPE_CHECKING imports): not a schema
        return None, None
    payload = hints.get(params[at]) if len(params) > at else None
    return payload, hints.get("return")


def codecs(cls: type, payload: Schema | None, result: Schema | None) -> tuple[Callable[..., bytes], Callable[[bytes], Any],
                                                                              Callable[..., bytes]]:
    """``(dump_payload(value) -> bytes, load_payload(bytes) -> value, dump_result(value, what)
    -> bytes)`` for a job class; serde's own functions when it declares no type."""
    name = getattr(cls, "name", cls.__qualname__)
    if payload is None:
        dump_payload: Callable[..., bytes] = serde.dumps
        load_payload: Callable[[bytes], Any] = serde.loads
    else:

        def dump_payload(value: Any, what: str = "payload") -> bytes:
            return serde.dumps(check_payload(name, payload, value), what)

        def load_payload(data: bytes) -> Any:
            try:
                return payload.load(serde.loads(data), "payload")
            except _Invalid as e:
                raise PayloadValidationError(f"{name}: {e}", name, e.path) from None

    if result is None:
        dump_result: Callable[..., bytes] = serde.dumps
    else:

        def dump_result(value: Any, what: str = "result") -> bytes:
            try:
                return serde.dumps(result.dump(value, "result"), what)
            except _Invalid as e:
                raise ResultValidationError(f"{name}: {e}", name, e.path) from None

    return dump_payload, load_payload, dump_result


def check_payload(name: str, schema: Schema, value: Any) -> Any:
    """A payload's JSON form, checked; ``PayloadValidationError`` names the field and the job."""
    try:
        return schema.dump(value, "payload")
    except _Invalid as e:
        raise PayloadValidationError(f"{name}: {e}", name, e.path) from None


def result_loader(schema: Schema | None) -> Callable[[Any], Any] | None:
    """What a handle turns a stored result into, or None (plain JSON)."""
    if schema is None:
        return None

    def load(value: Any) -> Any:
        try:
            return schema.load(value, "result")
        except _Invalid as e:
            raise ResultValidationError(f"{schema.tp.__qualname__}: {e}", None, e.path) from None

    return load


# ---- pydantic ----


def _pydantic(tp: Any, value: Any, path: str, load: bool) -> Any:
    pydantic = sys.modules.get("pydantic")
    if isinstance(value, tp) and not load:
        return value.model_dump(mode="json")
    try:
        obj = tp.model_validate(value)
    except Exception as e:
        if pydantic is None or not isinstance(e, pydantic.ValidationError):
            raise
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(e)}
        where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ()))
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise _Invalid(where, f"{first.get('msg', 'invalid')}{more}") from None
    return obj if load else obj.model_dump(mode="json")


# ---- dataclasses and TypedDicts: our own checks ----

_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(tp: Any) -> dict[str, Any]:
    hints = _HINTS.get(tp)
    if hints is None:
        hints = _HINTS[tp] = typing.get_type_hints(tp)
    return hints


def _describe(tp: Any) -> str:
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    if origin in _UNION_TYPES:
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_describe(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__qualname__", None) or str(tp)


def _got(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _check(tp: Any, value: Any, path: str, load: bool) -> Any:
    """``value`` checked against ``tp``: its JSON form (dump) or its typed form (load)."""
    if tp is Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is not None:
            raise _Invalid(path, f"expected None, got {_got(value)}")
        return None
    if tp is bool:
        if type(value) is not bool:
            raise _Invalid(path, f"expected bool, got {_got(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, f"expected int, got {_got(value)}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid(path, f"expected float, got {_got(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(path, f"expected str, got {_got(value)}")
        return value
    origin = typing.get_origin(tp)
    if origin in _UNION_TYPES:
        return _check_union(tp, value, path, load)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise _Invalid(path, f"expected {_describe(tp)}, got {value!r}")
        return value
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(path, f"expected {_describe(tp)}, got {_got(value)}")
        args = typing.get_args(tp)
        if not args:
            return list(value)
        return [_check(args[0], v, f"{path}[{i}]", load) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected {_describe(tp)}, got {_got(value)}")
        args = typing.get_args(tp)
        if not args:
            return dict(value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Invalid(path, f"expected str keys, got a key of type {_got(k)}")
            out[k] = _check(args[1], v, f"{path}[{k!r}]", load)
        return out
    if is_dataclass_type(tp):
        return _check_dataclass(tp, value, path, load)
    if is_typeddict(tp):
        return _check_typeddict(tp, value, path, load)
    if is_pydantic(tp):
        return _pydantic(tp, value, path, load)
    return value  # a type not checked here (datetime, Enum, ...): as JSON writes and reads it


def _check_union(tp: Any, value: Any, path: str, load: bool) -> Any:
    args = typing.get_args(tp)
    deepest: _Invalid | None = None
    for arg in args:
        try:
            return _check(arg, value, path, load)
        except _Invalid as e:
            if e.path != path and (deepest is None or len(e.path) > len(deepest.path)):
                deepest = e  # the arm that matched furthest tells the most
    if deepest is not None and value is not None:
        raise deepest
    raise _Invalid(path, f"expected {_describe(tp)}, got {_got(value)}")


def _fields_of(value: Any, tp: Any, path: str, load: bool) -> Mapping[str, Any]:
    if not load and isinstance(value, tp):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"expected {tp.__qualname__} (or a dict of its fields), got {_got(value)}")
    return value


def _check_dataclass(tp: Any, value: Any, path: str, load: bool) -> Any:
    if load and isinstance(value, tp):
        return value
    given = _fields_of(value, tp, path, load)
    hints = _hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = [k for k in given if k not in fields]
    if unknown:
        raise _Invalid(f"{path}.{unknown[0]}", f"unknown field of {tp.__qualname__}")
    out = {}
    for name, f in fields.items():
        if name not in given:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Invalid(f"{path}.{name}", f"required field of {tp.__qualname__} missing")
            continue
        out[name] = _check(hints.get(name, Any), given[name], f"{path}.{name}", load)
    return tp(**out) if load else out


def _check_typeddict(tp: Any, value: Any, path: str, load: bool) -> Any:
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"expected {tp.__qualname__} (a dict), got {_got(value)}")
    hints = _hints(tp)
    unknown = [k for k in value if k not in hints]
    if unknown:
        raise _Invalid(f"{path}.{unknown[0]}", f"unknown key of {tp.__qualname__}")
    for key in tp.__required_keys__:
        if key not in value:
            raise _Invalid(f"{path}.{key}", f"required key of {tp.__qualname__} missing")
    return {k: _check(_unwrap(hints[k]), v, f"{path}.{k}", load) for k, v in value.items()}


def _unwrap(tp: Any) -> Any:
    """``Required[X]`` / ``NotRequired[X]`` / ``ReadOnly[X]`` of a TypedDict: X."""
    while typing.get_origin(tp) is not None and getattr(typing.get_origin(tp), "_name", "") in ("Required", "NotRequired", "ReadOnly"):
        tp = typing.get_args(tp)[0]
    return tp
