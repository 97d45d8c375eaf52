"""Hooks that run when a job's outcome is known, and middleware around every handler call.

- Class hooks: ``on_complete(self, result)``, ``on_failure(self, error)``, ``on_retry(self,
  error, delay)`` on a job class (``Job`` defines them as no-ops).
- Hooks per dispatch: functions registered by name with ``@fastjobs.hook`` and named by the
  dispatch (``.on_complete(fn)``); the options carry the names, and a worker finds them in its
  own registry (the modules it imported).
- Middleware: ``@fastjobs.middleware`` (every worker of the process) or ``Worker(middleware=
  [...])``: a factory ``fn(job)`` returning a context manager entered around ``process``.

The worker (worker.py) runs them; docs/DESIGN.md ("Hooks and middleware") says why so.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, ExitStack
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from .job import Job

__all__ = ["hook", "middleware", "registered_hooks"]

log = logging.getLogger("fastjobs.worker")

#: The outcomes a hook may follow: option key -> the class method's name.
KINDS = {"complete": "on_complete", "failure": "on_failure", "retry": "on_retry"}

#: name -> function: hooks a dispatch may name (``@hook``).
_HOOKS: dict[str, Callable[..., Any]] = {}
#: Middleware of every worker of this process (``@middleware``), outermost first.
_MIDDLEWARE: list[Callable[[Any], Any]] = []

F = TypeVar("F", bound=Callable[..., Any])


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', None)}"


@overload
def hook(fn: F, /) -> F: ...


@overload
def hook(name: str, /) -> Callable[[F], F]: ...


def hook(arg: Any, /) -> Any:
    """Registers a function as a hook a dispatch may name, under ``"module:qualname"`` or the
    name given (``@fastjobs.hook("audit")``)::

        @fastjobs.hook
        def notify(job, result): ...

        SendEmail.dispatch(payload).on_complete(notify).send()

    A worker runs it only if the module defining it was imported there (a job module, or one
    it imports). Raises ``TypeError`` for a name another function holds already."""
    if isinstance(arg, str):
        if not arg:
            raise ValueError("a hook name must not be empty")
        return lambda fn: _register(fn, arg)
    return _register(arg, None)


def _register(fn: F, name: str | None) -> F:
    if not callable(fn):
        raise TypeError(f"@fastjobs.hook takes a function, got {type(fn).__name__}")
    name = name or _qualified(fn)
    existing = _HOOKS.get(name)
    if existing is not None and existing is not fn and _qualified(existing) != _qualified(fn):
        raise TypeError(f"hook name {name!r} is taken by {_qualified(existing)}; give {_qualified(fn)} a name of its own")
    _HOOKS[name] = fn
    try:
        fn.__fastjobs_hook__ = name  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # a builtin or a callable object with __slots__
        pass
    return fn


def registered_hooks() -> dict[str, Callable[..., Any]]:
    """A copy of the hooks registered in this process, by name."""
    return dict(_HOOKS)


def hook_name(fn: Any, kind: str) -> str:
    """The name a dispatch stores for a hook: a registered function's, or a str as given (a
    name registered in the workers, maybe not here). Raises ``TypeError`` for anything else."""
    if isinstance(fn, str):
        if not fn:
            raise ValueError(f"on_{kind}: a hook name must not be empty")
        return fn
    if not callable(fn):
        raise TypeError(f"on_{kind} takes a function registered with @fastjobs.hook (or its name), got {type(fn).__name__}")
    name = getattr(fn, "__fastjobs_hook__", None)
    if name is None or _HOOKS.get(name) is not fn:
        raise TypeError(f"on_{kind}: {_qualified(fn)} is not a registered hook: decorate it with @fastjobs.hook, so that "
                        "a worker in another process can find it by name")
    return str(name)


def middleware(fn: F) -> F:
    """Registers ``fn(job)`` as middleware of every worker in this process: it returns a
    context manager (for async jobs an async context manager too) entered around each
    ``process`` call, so it sees the handler's exception. The first registered is outermost.
    Usable as a decorator; register it in a module the worker imports (a job module)."""
    if not callable(fn):
        raise TypeError(f"middleware takes a function job -> context manager, got {type(fn).__name__}")
    if fn not in _MIDDLEWARE:
        _MIDDLEWARE.append(fn)
    return fn


def check_middleware(fns: Iterable[Any]) -> tuple[Callable[[Any], Any], ...]:
    out = tuple(fns)
    for fn in out:
        if not callable(fn):
            raise TypeError(f"middleware takes functions job -> context manager, got {type(fn).__name__}")
    return out


def middleware_names(fns: Iterable[Callable[..., Any]]) -> list[str]:
    """``Worker(middleware=...)`` of a pool: each function as "module:qualname", which a child
    imports (a spawned child has none of the parent's objects). Raises ``ValueError`` for a
    function that cannot be found so (a lambda, a nested function, one of ``__main__``)."""
    names = []
    for fn in fns:
        name = _qualified(fn)
        try:
            found = resolve(name)
        except (ImportError, AttributeError):
            found = None
        if found is not fn or name.startswith("__main__:"):
            raise ValueError(f"middleware {name} of a worker pool must be a module-level function of an importable module "
                             "(each child imports it): or register it with @fastjobs.middleware in a job module")
        names.append(name)
    return names


def resolve(name: str) -> Any:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def snapshot(own: tuple[Callable[[Any], Any], ...]) -> tuple[Callable[[Any], Any], ...]:
    """A worker's middleware when it starts: the process's, then its own."""
    return (*_MIDDLEWARE, *own)


# ---- running them (from worker.py, only for jobs that have any) ----


def _not_a_context_manager(fn: Callable[..., Any], cm: Any, is_async: bool) -> TypeError:
    wanted = "a context manager or an async context manager" if is_async else "a context manager (async ones wrap async jobs only)"
    return TypeError(f"middleware {_qualified(fn)} returned {type(cm).__name__}, not {wanted}")


def call_wrapped(mw: tuple[Callable[[Any], Any], ...], inst: Job[Any, Any], payload: Any) -> Any:
    """``inst.process(payload)`` inside the middleware. An exception of the handler goes out
    through every middleware; one raised by a middleware is the attempt's. A middleware that
    suppresses the handler's exception makes the attempt succeed with None."""
    with ExitStack() as stack:
        for fn in mw:
            cm = fn(inst)
            if not hasattr(cm, "__enter__"):
                raise _not_a_context_manager(fn, cm, False)
            stack.enter_context(cm)
        return inst.process(payload)
    return None  # the handler's exception was suppressed by a middleware


async def call_wrapped_async(mw: tuple[Callable[[Any], Any], ...], inst: Job[Any, Any], payload: Any) -> Any:
    """``call_wrapped`` for async jobs: an async context manager is awaited, a plain one
    entered on the loop."""
    async with AsyncExitStack() as stack:
        for fn in mw:
            cm = fn(inst)
            if hasattr(cm, "__aenter__"):
                await stack.enter_async_context(cm)
            elif hasattr(cm, "__enter__"):
                stack.enter_context(cm)
            else:
                raise _not_a_context_manager(fn, cm, True)
        return await inst.process(payload)
    return None


def _targets(inst: Job[Any, Any], opts: dict[str, Any] | None, kind: str) -> list[tuple[str, Callable[..., Any], bool]]:
    """The hooks to run for an outcome: the class's (bound), then the dispatch's in the order
    given, as (name for the log, function, takes the job first)."""
    out: list[tuple[str, Callable[..., Any], bool]] = []
    cls = type(inst)
    if kind in cls._hook_kinds:
        out.append((f"{cls.__qualname__}.{KINDS[kind]}", getattr(inst, KINDS[kind]), False))
    named = (opts or {}).get("hooks")
    if isinstance(named, dict):
        for name in named.get(kind) or ():
            fn = _HOOKS.get(name) if isinstance(name, str) else None
            if fn is None:
                log.error("job %s (%s): no hook named %r is registered in this worker (import the module defining it "
                          "in a job module); its %s hook is skipped", inst.job_id, cls.name, name, kind)
                continue
            out.append((name, fn, True))
    return out


def run_hooks(inst: Job[Any, Any], opts: dict[str, Any] | None, kind: str, args: tuple[Any, ...],
              loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Runs a sync job's hooks for an outcome in its thread; a coroutine a hook returns runs
    on the worker's event loop (``loop()``), the thread waiting for it. A hook that raises is
    logged with its traceback; the job's outcome stands."""
    for name, fn, with_job in _targets(inst, opts, kind):
        try:
            r = fn(inst, *args) if with_job else fn(*args)
            if inspect.isawaitable(r):
                asyncio.run_coroutine_threadsafe(_awaited(r), loop()).result()
        except Exception:  # noqa: BLE001 - a hook never changes the job's outcome
            log.exception("job %s (%s): its %s hook %s raised; the job's outcome stands", inst.job_id, type(inst).name, kind, name)


async def run_hooks_async(inst: Job[Any, Any], opts: dict[str, Any] | None, kind: str, args: tuple[Any, ...]) -> None:
    """An async job's hooks, on its loop: a coroutine function is awaited, a plain one called."""
    for name, fn, with_job in _targets(inst, opts, kind):
        try:
            r = fn(inst, *args) if with_job else fn(*args)
            if inspect.isawaitable(r):
                await r
        except Exception:  # noqa: BLE001 - a hook never changes the job's outcome
            log.exception("job %s (%s): its %s hook %s raised; the job's outcome stands", inst.job_id, type(inst).name, kind, name)


async def _awaited(r: Awaitable[Any]) -> Any:
    return await r
