"""The web dashboard (fastjobs.dashboard): its JSON API through httpx against the ASGI app,
then the pages in a real headless chromium driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import fastjobs
from fastjobs.dashboard import Dashboard, app

from .apps.dashboard_jobs import DashBoom, DashChatty, DashLong
from .conftest import ROOT, RedisServer, eventually, free_port

TOKEN = "s3cret-token-for-tests"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def client(dashboard: Dashboard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url="http://dash")


@pytest.fixture
async def dash() -> AsyncIterator[Dashboard]:
    d = app(token=TOKEN, sample_every=0.05)
    yield d
    await d.aclose()


@pytest.fixture
def jobs(start_worker: Any) -> dict[str, str]:
    """One failed job (with its traceback) and one completed job (with progress and logs)."""
    boom = DashBoom.dispatch(7).send()
    chatty = DashChatty.dispatch({"x": 1}).send()
    w = start_worker(queues=["dash-fail", "dash-ok"])
    eventually(lambda: boom.status() == "failed" and chatty.status() == "completed")
    w.stop()
    return {"failed": boom.id, "completed": chatty.id}


async def test_reads(dash: Dashboard, jobs: dict[str, str]) -> None:
    fastjobs.JobScheduler.schedule(key="dash-every", job=DashChatty, repeat={"every": "1h"}, data={"n": 1})
    async with client(dash) as c:
        page = await c.get("/")
        assert page.status_code == 200 and b'<main id="main">' in page.content
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await c.get("/static/app.js")).headers["content-type"].startswith("text/javascript")

        overview = (await c.get("/api/overview")).json()
        assert overview["actions"] is True and overview["authenticated"] is False and overview["read_only"] is False
        assert (await c.get("/api/overview", headers=BEARER)).json()["authenticated"] is True

        queues = {q["name"]: q for q in (await c.get("/api/queues")).json()["queues"]}
        assert queues["dash-fail"]["counts"]["failed"] == 1
        assert queues["dash-ok"]["counts"]["completed"] == 1
        assert queues["dash-ok"]["paused"] is False
        fastjobs.Queue("dash-ok").set_limits(rate=10, per="1s", concurrency=3)
        one = (await c.get("/api/queues/dash-ok")).json()
        assert one["limits"] == {"rate": 10, "per": 1.0, "concurrency": 3}

        failed = (await c.get("/api/queues/dash-fail/failed")).json()["jobs"]
        assert [j["id"] for j in failed] == [jobs["failed"]]
        assert failed[0]["error"]["type"].endswith("RuntimeError") and failed[0]["error"]["message"] == "boom 7"
        assert 'raise RuntimeError(f"boom {payload}")' in failed[0]["error"]["traceback"]

        job = (await c.get(f"/api/queues/dash-ok/jobs/{jobs['completed']}")).json()
        assert job["job"]["state"] == "completed" and job["job"]["result"] == {"echo": {"x": 1}}
        assert job["job"]["progress"]["value"] == 0.5  # a completed job keeps its result, not its record
        assert [(line["level"], line["message"]) for line in job["logs"]] == [("info", "working on it"), ("warning", "nearly there")]
        later = (await c.get(f"/api/queues/dash-ok/jobs/{jobs['completed']}?logs_from=1")).json()
        assert [line["message"] for line in later["logs"]] == ["nearly there"]
        bad = (await c.get(f"/api/queues/dash-fail/jobs/{jobs['failed']}")).json()["job"]
        assert bad["state"] == "failed" and bad["payload"] == 7 and bad["name"] == "DashBoom" and "boom 7" in bad["error"]["message"]

        schedules = (await c.get("/api/schedules")).json()["schedules"]
        assert [(s["key"], s["queue"]) for s in schedules] == [("dash-every", "dash-ok")]

        workers = (await c.get("/api/workers")).json()
        assert workers["available"] is hasattr(fastjobs, "workers")

        # the sampler started with the first request: two points give rates per queue
        for _ in range(600):
            if len(dash.sampler.points) >= 2:
                break
            await asyncio.sleep(0.02)  # the sampler runs on this event loop
        series = (await c.get("/api/series")).json()
        assert series["every"] == 0.05
        last = series["points"][-1]["queues"]
        assert set(last) >= {"dash-fail", "dash-ok"}
        assert last["dash-ok"]["completed_per_s"] == 0 and last["dash-ok"]["waiting"] == 0


async def test_series_counts_completions(dash: Dashboard, start_worker: Any) -> None:
    DashChatty.dispatch(0).send()
    await dash.sampler.sample()  # the queue exists, one job waits
    first = dash.sampler.points[-1]["queues"]["dash-ok"]
    assert first["waiting"] == 1 and first["completed_per_s"] is None
    handles = [DashChatty.dispatch(i).send() for i in range(1, 5)]
    w = start_worker(queues=["dash-ok"])
    for h in handles:
        h.wait_result(timeout=10)
    w.stop()
    point = await dash.sampler.sample()
    assert point["queues"]["dash-ok"]["completed_per_s"] > 0 and point["queues"]["dash-ok"]["waiting"] == 0


async def test_actions_need_the_token(dash: Dashboard, jobs: dict[str, str]) -> None:
    retry = f"/api/queues/dash-fail/jobs/{jobs['failed']}/retry"
    async with client(dash) as c:
        r = await c.post(retry)
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert (await c.post(retry, headers={"authorization": "Bearer wrong-token-x"})).status_code == 401
        assert (await c.post("/api/queues/dash-ok/pause")).status_code == 401
        assert not fastjobs.Queue("dash-ok").is_paused()

        assert (await c.post("/login", json={"token": "wrong"})).status_code == 401
        login = await c.post("/login", json={"token": TOKEN})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        assert (await c.get("/api/overview")).json()["authenticated"] is True
        # the cookie alone is not enough: a cross-site form cannot add the pages' header
        assert (await c.post("/api/queues/dash-ok/pause")).status_code == 403
        r = await c.post("/api/queues/dash-ok/pause", headers={"x-fastjobs-dashboard": "1"})
        assert r.status_code == 200 and r.json() == {"queue": "dash-ok", "changed": True, "paused": True}
        assert fastjobs.Queue("dash-ok").is_paused()
        await c.post("/logout")
        assert (await c.get("/api/overview")).json()["authenticated"] is False


@pytest.mark.parametrize("kind", ["read-only", "no token"])
async def test_actions_refused_without_actions(kind: str, jobs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTJOBS_DASHBOARD_TOKEN", raising=False)
    d = app(token=TOKEN, read_only=True) if kind == "read-only" else app()
    try:
        async with client(d) as c:
            assert (await c.get("/api/overview")).json()["actions"] is False
            for path in [f"/api/queues/dash-fail/jobs/{jobs['failed']}/retry", "/api/queues/dash-fail/failed/purge", "/api/queues/dash-ok/pause"]:
                r = await c.post(path, headers=BEARER)
                assert r.status_code == 403, path
            assert (await c.post("/login", json={"token": TOKEN})).status_code == 403
            assert (await c.get("/api/queues/dash-fail/failed")).status_code == 200  # reads stay open
        assert fastjobs.Queue("dash-fail").counts()["failed"] == 1
    finally:
        await d.aclose()


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTJOBS_DASHBOARD_TOKEN", TOKEN)
    assert app().token == TOKEN
    with pytest.raises(ValueError, match="at least 8 characters"):
        app(token="short")
    with pytest.raises(TypeError, match="read_only"):
        app(token=TOKEN, read_only="yes")  # type: ignore[arg-type]


async def test_actions(dash: Dashboard, jobs: dict[str, str]) -> None:
    q = fastjobs.Queue("dash-fail")
    failed = jobs["failed"]
    async with client(dash) as c:
        assert (await c.post("/api/queues/dash-fail/pause", headers=BEARER)).json()["changed"] is True
        assert (await c.post("/api/queues/dash-fail/pause", headers=BEARER)).json()["changed"] is False
        r = await c.post(f"/api/queues/dash-fail/jobs/{failed}/retry", headers=BEARER)
        assert r.status_code == 200 and q.get_job(failed).state == "waiting"  # type: ignore[union-attr]
        # retrying a job that is not failed is a conflict, not a server error
        assert (await c.post(f"/api/queues/dash-fail/jobs/{failed}/retry", headers=BEARER)).status_code == 409
        r = await c.post(f"/api/queues/dash-fail/jobs/{failed}/cancel", headers=BEARER)
        assert r.json() == {"cancelled": failed, "was": "waiting"}
        assert q.get_job(failed).state == "cancelled"  # type: ignore[union-attr]
        done = jobs["completed"]
        r = await c.post(f"/api/queues/dash-ok/jobs/{done}/delete", headers=BEARER)
        assert r.json() == {"deleted": done, "was": "completed"}
        assert fastjobs.Queue("dash-ok").get_job(done).result is None  # type: ignore[union-attr]
        assert (await c.post("/api/queues/dash-fail/resume", headers=BEARER)).json()["paused"] is False
        assert not q.is_paused()

        DashBoom.dispatch(1).send()
        DashBoom.dispatch(2).send()
        eventually(lambda: q.counts()["failed"] == 0)  # nothing runs them yet
    return None


async def test_a_running_job_live_and_cancelled(dash: Dashboard, start_worker: Any) -> None:
    """A running job's page shows its progress and log while it runs; cancel stops it."""
    handle = DashLong.dispatch({"n": 1}).send()
    start_worker(queues=["dash-long"])
    url = f"/api/queues/dash-long/jobs/{handle.id}"
    async with client(dash) as c:
        for _ in range(750):
            seen = (await c.get(url)).json()
            # progress and the log line are written apart: wait for both
            if seen["job"]["state"] == "active" and seen["logs"] and seen["job"]["progress"]:
                break
            await asyncio.sleep(0.02)
        assert seen["job"]["state"] == "active" and seen["job"]["progress"]["value"] == 0.25
        assert [line["message"] for line in seen["logs"]] == ["started"]
        # a running job cannot be deleted: a conflict, not a server error
        assert (await c.post(f"{url}/delete", headers=BEARER)).status_code == 409
        r = await c.post(f"{url}/cancel", headers=BEARER)
        assert r.json() == {"cancelled": handle.id, "was": "active"}
        eventually(lambda: handle.status() == "cancelled")
        assert (await c.get(url)).json()["job"]["state"] == "cancelled"


async def test_retry_all_and_purge(dash: Dashboard, start_worker: Any) -> None:
    q = fastjobs.Queue("dash-fail")
    for i in range(3):
        DashBoom.dispatch(i).send()
    w = start_worker(queues=["dash-fail"])
    eventually(lambda: q.counts()["failed"] == 3)
    w.stop()
    async with client(dash) as c:
        assert (await c.post("/api/queues/dash-fail/failed/retry", headers=BEARER)).json() == {"queue": "dash-fail", "retried": 3}
        assert q.counts()["waiting"] == 3 and q.counts()["failed"] == 0
        w = start_worker(queues=["dash-fail"])
        eventually(lambda: q.counts()["failed"] == 3)
        w.stop()
        assert (await c.post("/api/queues/dash-fail/failed/purge", headers=BEARER)).json() == {"queue": "dash-fail", "purged": 3}
        assert q.counts()["failed"] == 0


async def test_unknown_things_are_404(dash: Dashboard, jobs: dict[str, str]) -> None:
    async with client(dash) as c:
        for method, path in [
            ("GET", "/api/queues/nope"),
            ("GET", "/api/queues/nope/failed"),
            ("GET", "/api/queues/nope/jobs/abc"),
            ("GET", "/api/queues/dash-ok/jobs/no-such-job"),
            ("GET", "/api/queues/dash-ok/jobs/%00%01bad"),
            ("GET", "/api/queues/" + "x" * 300),
            ("GET", "/api/nothing"),
            ("GET", "/static/nothing.js"),
            ("POST", "/api/queues/nope/pause"),
            ("POST", "/api/queues/nope/failed/purge"),
            ("POST", "/api/queues/dash-ok/jobs/no-such-job/retry"),
            ("POST", "/api/queues/dash-ok/jobs/no-such-job/delete"),
            ("POST", "/api/queues/dash-ok/jobs/no-such-job/cancel"),
            ("POST", "/api/queues/dash-ok/jobs/%00bad/cancel"),
        ]:
            r = await c.request(method, path, headers=BEARER)
            assert r.status_code == 404, (method, path, r.text)
            assert r.headers["content-type"] == "application/json" and r.json()["error"]
        assert (await c.post("/api/queues", headers=BEARER)).status_code == 405
        assert (await c.get("/api/queues/dash-ok/failed?limit=0")).status_code == 400


async def test_workers_page_uses_the_registry_when_there_is_one(dash: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    """fastjobs.workers() is read when the package has it (a registry another change adds)."""
    seen: list[str] = []

    def workers(*, connection: str = "default") -> list[dict[str, Any]]:
        seen.append(connection)
        return [{"id": "w1", "queues": ["dash-ok"], "running": 2}]

    monkeypatch.setattr(fastjobs, "workers", workers, raising=False)
    async with client(dash) as c:
        assert (await c.get("/api/workers")).json() == {"available": True, "workers": [{"id": "w1", "queues": ["dash-ok"], "running": 2}]}
    assert seen == ["default"]


def test_command_refuses_a_short_token(capsys: pytest.CaptureFixture[str]) -> None:
    from fastjobs import cli

    assert cli.main(["dashboard", "--token", "short", "--port", str(free_port())]) == 1
    assert "at least 8 characters" in capsys.readouterr().err


async def test_mounted_under_a_prefix() -> None:
    """Mounted at /ops of a user's app (root_path set, as Starlette's Mount does)."""
    d = app(token=TOKEN)
    DashChatty.dispatch(1).send()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=d, root_path="/ops"), base_url="http://dash") as c:
            assert (await c.get("/ops")).headers["location"] == "/ops/"
            assert (await c.get("/ops/")).status_code == 200
            assert [q["name"] for q in (await c.get("/ops/api/queues")).json()["queues"]] == ["dash-ok"]
            assert "Path=/ops/" in (await c.post("/ops/login", json={"token": TOKEN})).headers["set-cookie"]
    finally:
        await d.aclose()


# ---- a real browser ----

class Chromium:
    """Headless chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    JSON messages ended by a NUL byte, read from fd 3 and written to fd 4)."""

    def __init__(self, exe: str, width: int, height: int) -> None:
        self.profile = tempfile.mkdtemp(prefix="fastjobs-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends above fd 4, so that moving them to fds 3 and 4 overwrites neither
        to_chrome_r, from_chrome_w = (self._high(fd) for fd in (to_chrome_r, from_chrome_w))
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', exe, *args],
                                     pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._ids = 0
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _high(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return high

    def call(self, method: str, *, session: bool = False, timeout: float = 15.0, **params: Any) -> Any:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._ids:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method}")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buf += chunk

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


def _png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, the decompressed pixel rows) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, size = 8, b"", (0, 0)
    while at < len(data):
        (n,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + n]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    return size[0], size[1], zlib.decompress(idat)


@pytest.fixture
def served(redis_server: RedisServer, prefix: str) -> Iterator[str]:
    """`fastjobs dashboard` in a real process on a free port; yields its URL."""
    port = free_port()
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, FASTJOBS_PREFIX=prefix, FASTJOBS_DASHBOARD_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "fastjobs", "dashboard", "--port", str(port)], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            assert proc.poll() is None, "fastjobs dashboard exited"
            return False

    try:
        eventually(up, timeout=15)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


# Skipped only outside CI: `make deps` installs chromium, and CI (CI=true) fails without it.
@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                    reason="chromium is not installed: run `make deps` (Debian package chromium)")
def test_pages_in_a_browser(served: str, jobs: dict[str, str]) -> None:
    browser = Chromium(shutil.which("chromium") or "chromium", 1280, 800)
    try:
        browser.call("Page.navigate", session=True, url=served + "#/")
        eventually(lambda: browser.js("document.querySelectorAll('tr.queue-row').length") == 2, timeout=15)
        rows = browser.js("[...document.querySelectorAll('tr.queue-row')].map(r => [r.dataset.queue, "
                          "r.querySelector('[data-count=failed]').textContent, r.querySelector('[data-count=completed]').textContent])")
        assert rows == [["dash-fail", "1", "0"], ["dash-ok", "0", "1"]]
        assert browser.js("document.querySelectorAll('[data-action]').length") == 0  # not logged in: no buttons

        shot = base64_png(browser.call("Page.captureScreenshot", session=True, format="png")["data"])
        width, height, pixels = _png(shot)
        assert (width, height) == (1280, 800)
        assert len(set(pixels)) > 16, "the screenshot is blank"

        browser.call("Page.navigate", session=True, url=served + "#/queue/dash-fail")
        eventually(lambda: browser.js("document.querySelectorAll('.failed-job').length") == 1, timeout=15)
        assert "boom 7" in browser.js("document.querySelector('.failed-job .traceback').textContent")

        # log in through the form, then retry the failed job with its button
        browser.js(f"document.getElementById('token').value = {json.dumps(TOKEN)}; document.getElementById('login').requestSubmit()")
        eventually(lambda: browser.js("document.querySelector('.failed-job [data-action=retry]') !== null"), timeout=15)
        browser.js("document.querySelector('.failed-job [data-action=retry]').click()")
        q = fastjobs.Queue("dash-fail")
        eventually(lambda: q.get_job(jobs["failed"]).state == "waiting", timeout=15)  # type: ignore[union-attr]
        eventually(lambda: browser.js("document.querySelectorAll('.failed-job').length") == 0, timeout=15)

        # the job page of the completed job: payload, result and log lines
        browser.call("Page.navigate", session=True, url=served + f"#/job/dash-ok/{jobs['completed']}")
        eventually(lambda: browser.js("document.getElementById('job-state') && document.getElementById('job-state').textContent") == "completed")
        assert "nearly there" in browser.js("document.getElementById('logs').textContent")
        assert browser.js("document.querySelector('.progress > div').style.width") == "50%"  # styled through the CSSOM, as the CSP wants
        assert '"echo"' in browser.js("document.getElementById('result').textContent")
    finally:
        browser.close()


def base64_png(data: str) -> bytes:
    import base64

    return base64.b64decode(data)
