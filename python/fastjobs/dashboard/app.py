"""The dashboard's ASGI app: the pages, the JSON API under ``api/``, and the token that
guards the actions (docs/DESIGN.md, "Dashboard")."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fastjobs

from .. import config
from ..dispatch import JobHandle
from ..errors import ConnectionError, JobStateError, StoreError, UnknownJobError, UnknownQueueError
from ..queue import Queue
from ..schedule import JobScheduler
from .http import HTTPError, Receive, Request, Response, Scope, Send, json_response
from .series import Sampler

__all__ = ["Dashboard", "TOKEN_ENV"]

log = logging.getLogger("fastjobs.dashboard")

#: Where the token is read from when none is given.
TOKEN_ENV = "FASTJOBS_DASHBOARD_TOKEN"
#: The login cookie: an HMAC of the token, never the token itself.
COOKIE = "fastjobs_dashboard"
#: Header the pages send with cookie-authenticated actions: a cross-site form cannot set it.
CSRF_HEADER = "x-fastjobs-dashboard"

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

Handler = Callable[[Request], Awaitable[Response]]


def _workers(connection: str) -> list[Any] | None:
    """The workers of the connection, from ``fastjobs.workers()`` when this fastjobs has it;
    None when it does not (the page then says so)."""
    workers = getattr(fastjobs, "workers", None)
    if workers is None:
        return None
    return list(workers(connection=connection))


def _as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class Dashboard:
    """An ASGI app; mount it anywhere (``fastjobs.dashboard.app()`` makes one).

    ``token`` guards the actions (retry, delete, purge, pause, resume, cancel): sent as
    ``Authorization: Bearer <token>``, or through the login form's cookie. Without a token
    (neither given nor in ``$FASTJOBS_DASHBOARD_TOKEN``) the actions are off, as with
    ``read_only``."""

    def __init__(self, *, token: str | None = None, read_only: bool = False, connection: str = "default",
                 sample_every: float = 5.0, history: int = 720) -> None:
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise ValueError("the dashboard token must be a string of at least 8 characters")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be True or False, got {type(read_only).__name__}")
        self.token = token
        self.read_only = read_only
        self.connection = connection
        self.sampler = Sampler(connection, every=sample_every, keep=history)
        self._session = hmac.new(token.encode(), b"fastjobs dashboard login", hashlib.sha256).hexdigest() if token else None
        self._files = {name: p.read_bytes() for name, p in ((p.name, p) for p in STATIC.iterdir() if p.suffix in _TYPES)}
        q, j = r"(?P<queue>[^/]+)", r"(?P<job>[^/]+)"
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            (m, re.compile(f"^{p}$"), h, action)
            for m, p, h, action in [
                ("GET", "/api/overview", self.overview, False),
                ("GET", "/api/queues", self.queues, False),
                ("GET", f"/api/queues/{q}", self.queue, False),
                ("GET", f"/api/queues/{q}/failed", self.failed, False),
                ("GET", f"/api/queues/{q}/jobs/{j}", self.job, False),
                ("GET", "/api/series", self.series, False),
                ("GET", "/api/schedules", self.schedules, False),
                ("GET", "/api/workers", self.workers, False),
                ("POST", f"/api/queues/{q}/pause", self.pause, True),
                ("POST", f"/api/queues/{q}/resume", self.resume, True),
                ("POST", f"/api/queues/{q}/failed/retry", self.retry_all, True),
                ("POST", f"/api/queues/{q}/failed/purge", self.purge, True),
                ("POST", f"/api/queues/{q}/jobs/{j}/retry", self.retry, True),
                ("POST", f"/api/queues/{q}/jobs/{j}/delete", self.delete, True),
                ("POST", f"/api/queues/{q}/jobs/{j}/cancel", self.cancel, True),
                ("POST", "/login", self.login, False),
                ("POST", "/logout", self.logout, False),
            ]
        ]

    # ---- ASGI ----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.sampler.start()  # mounted apps may get no lifespan events: start on the first request
        try:
            request = await Request.read(scope, receive)
            response = await self._handle(request)
        except HTTPError as e:
            response = json_response({"error": e.message}, e.status)
        except Exception as e:  # noqa: BLE001 - a fault of ours still answers in JSON, and is logged
            log.exception("fastjobs dashboard: %s %s failed", scope.get("method"), scope.get("path"))
            response = json_response({"error": f"{type(e).__name__}: {e}"}, 500)
        await response.send(send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.sampler.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.sampler.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Stops the sampler (for apps that never send lifespan events, and tests)."""
        await self.sampler.stop()

    async def _handle(self, request: Request) -> Response:
        path = request.path
        if path == "":
            return Response(307, headers=[(b"location", (request.root_path + "/").encode())])
        if request.method in ("GET", "HEAD") and (path == "/" or path.startswith("/static/")):
            return self._static("index.html" if path == "/" else path[len("/static/"):])
        allowed = False
        for method, pattern, handler, action in self._routes:
            m = pattern.match(path)
            if m is None:
                continue
            if method != request.method:
                allowed = True
                continue
            if action:
                self._authorize(request)
            request.params = m.groupdict()
            try:
                return await handler(request)
            except (UnknownJobError, UnknownQueueError) as e:
                raise HTTPError(404, str(e)) from None
            except JobStateError as e:
                raise HTTPError(409, str(e)) from None
            except (ConnectionError, StoreError) as e:
                raise HTTPError(503, f"{type(e).__name__}: {e}") from None
        if allowed:
            raise HTTPError(405, f"{request.method} is not allowed on {path}")
        raise HTTPError(404, f"no such page or endpoint: {path}")

    def _static(self, name: str) -> Response:
        body = self._files.get(name)
        if body is None:
            raise HTTPError(404, f"no such file: {name}")
        return Response(200, body, _TYPES[Path(name).suffix])

    # ---- the token ----

    def _authenticated(self, request: Request) -> bool:
        if self.token is None or self._session is None:
            return False
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return hmac.compare_digest(auth[7:].strip().encode(), self.token.encode())
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode())

    def _authorize(self, request: Request) -> None:
        if self.read_only:
            raise HTTPError(403, "the dashboard is read-only")
        if self.token is None:
            raise HTTPError(403, f"actions are off: start the dashboard with a token (--token or ${TOKEN_ENV})")
        if not self._authenticated(request):
            raise HTTPError(401, "this action needs the dashboard's token (Authorization: Bearer <token>, or log in)")
        if "authorization" not in request.headers and request.headers.get(CSRF_HEADER) != "1":
            raise HTTPError(403, f"a logged-in action must send the {CSRF_HEADER}: 1 header (as the dashboard's pages do)")

    async def login(self, request: Request) -> Response:
        if self.read_only or self.token is None or self._session is None:
            raise HTTPError(403, "there is nothing to log in to: the dashboard's actions are off")
        given = request.form().get("token", "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPError(401, "wrong token")
        return json_response({"ok": True}, 200).with_cookie(self._cookie(request, self._session, 12 * 3600))

    async def logout(self, request: Request) -> Response:
        return json_response({"ok": True}).with_cookie(self._cookie(request, "", 0))

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        secure = "; Secure" if request.scheme == "https" else ""
        return f"{COOKIE}={value}; Path={request.root_path or ''}/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    # ---- reads ----

    async def _known(self, name: str) -> Queue:
        known = await config.client(self.connection).queues(asynchronous=True)
        if name not in known:
            raise HTTPError(404, f"no queue {name!r} (nothing was dispatched to it or consumed from it)")
        return Queue(name, connection=self.connection)

    async def _queue_json(self, q: Queue) -> dict[str, Any]:
        counts = await q.counts_async()
        return {"name": q.name, "counts": {k: v for k, v in counts.items() if k != "paused"}, "paused": bool(counts["paused"]),
                "limits": _as_json(await q.limits_async()), "group_limits": _as_json(await q.group_limits_async())}

    async def overview(self, request: Request) -> Response:
        return json_response({
            "version": fastjobs.__version__,
            "read_only": self.read_only,
            "actions": not self.read_only and self.token is not None,
            "authenticated": self._authenticated(request),
            "sample_every": self.sampler.every,
        })

    async def queues(self, request: Request) -> Response:
        queues = await Queue.all_async(connection=self.connection)
        return json_response({"queues": [await self._queue_json(q) for q in sorted(queues, key=lambda q: q.name)]})

    async def queue(self, request: Request) -> Response:
        return json_response(await self._queue_json(await self._known(request.params["queue"])))

    async def failed(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        jobs = await q.failed_async(request.arg("limit", 100, low=1, high=10_000))
        return json_response({"queue": q.name, "jobs": [dataclasses.asdict(j) for j in jobs]})

    async def job(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        job_id = request.params["job"]
        handle: JobHandle[Any] = JobHandle(job_id, q.name, self.connection)
        try:
            info = await handle.info_async()
        except ValueError:  # not a possible job id
            raise HTTPError(404, f"no job {job_id!r} in queue {q.name!r}") from None
        if info.state == "unknown":
            raise HTTPError(404, f"no job {job_id!r} in queue {q.name!r} (never dispatched, or expired)")
        start = request.arg("logs_from", 0, low=0, high=1_000_000)
        logs = await handle.logs_async(start, 1000)
        return json_response({"job": dataclasses.asdict(info), "logs": [dataclasses.asdict(line) for line in logs]})

    async def series(self, request: Request) -> Response:
        return json_response(self.sampler.series())

    async def schedules(self, request: Request) -> Response:
        found = await JobScheduler.list_async(connection=self.connection)
        return json_response({"schedules": [dataclasses.asdict(s) for s in found]})

    async def workers(self, request: Request) -> Response:
        found = await asyncio.to_thread(_workers, self.connection)
        if found is None:
            return json_response({"available": False, "workers": []})
        return json_response({"available": True, "workers": [_as_json(w) for w in found]})

    # ---- actions ----

    async def pause(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        return json_response({"queue": q.name, "changed": await q.pause_async(), "paused": True})

    async def resume(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        return json_response({"queue": q.name, "changed": await q.resume_async(), "paused": False})

    async def retry_all(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        return json_response({"queue": q.name, "retried": await q.retry_failed_async()})

    async def purge(self, request: Request) -> Response:
        q = await self._known(request.params["queue"])
        return json_response({"queue": q.name, "purged": await q.purge_failed_async()})

    async def _job_action(self, request: Request, act: Callable[[Queue, str], Awaitable[Any]]) -> Any:
        q = await self._known(request.params["queue"])
        try:
            return await act(q, request.params["job"])
        except ValueError:  # not a possible job id
            raise HTTPError(404, f"no job {request.params['job']!r} in queue {q.name!r}") from None

    async def retry(self, request: Request) -> Response:
        await self._job_action(request, lambda q, j: q.retry_async(j))
        return json_response({"retried": request.params["job"]})

    async def delete(self, request: Request) -> Response:
        was = await self._job_action(request, lambda q, j: q.remove_async(j))
        return json_response({"deleted": request.params["job"], "was": was})

    async def cancel(self, request: Request) -> Response:
        was = await self._job_action(request, lambda q, j: q.cancel_async(j))
        return json_response({"cancelled": request.params["job"], "was": was})
