"""The FastAPI recipe of benches/web/app.py against the real Redis of the test run: every request
to a dispatching endpoint leaves exactly one waiting job, whose id the answer gives; /plain
leaves none; a Redis that cannot be reached answers 503."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest

import fastjobs

from .conftest import RedisServer, free_port, waiting_records
from .resp import Redis

APP = Path(__file__).resolve().parent.parent / "benches" / "web" / "app.py"


def load_recipe() -> ModuleType:
    """benches/web/app.py as a module (it is a script directory, not a package)."""
    spec = importlib.util.spec_from_file_location("fastjobs_web_recipe", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


recipe = load_recipe()


@pytest.fixture
async def client(redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run (which configures fastjobs from the environment, as under
    uvicorn), pointed at the test's Redis and key prefix."""
    monkeypatch.setenv("FASTJOBS_URL", redis_server.url)
    monkeypatch.setenv("FASTJOBS_PREFIX", prefix)
    fastjobs.config.reset()
    app = recipe.app
    async with app.router.lifespan_context(app):
        assert fastjobs.config.settings().url == redis_server.url
        assert fastjobs.config.settings().prefix == prefix
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as c:
            yield c


async def test_each_request_leaves_one_waiting_job(client: httpx.AsyncClient, redis: Redis, prefix: str, start_worker: Any) -> None:
    web = fastjobs.Queue("web")
    users = [f"u{i}@example.com" for i in range(25)] + [f"s{i}@example.com" for i in range(25)]
    answers = await asyncio.gather(
        *(client.get("/dispatch", params={"user": u}) for u in users[:25]),
        *(client.post("/signup", json={"email": u}) for u in users[25:]),
    )
    assert [a.status_code for a in answers] == [200] * 50
    handles = [fastjobs.JobHandle(a.json()["job"], "web") for a in answers]
    assert len({h.id for h in handles}) == 50
    for h in handles:
        assert await h.status_async() == "waiting"
    assert (await web.counts_async())["waiting"] == 50
    # The ready list holds one record per request, each with its request's payload.
    records = waiting_records(redis, prefix, "web")
    assert len(records) == 50
    for u in users:
        assert sum(orjson.dumps({"user": u}) in r for r in records) == 1, u

    # `fastjobs worker app --queue web` runs them: each id is a job that completes.
    start_worker(queues=["web"], concurrency=4)
    for h in handles:
        assert await h.wait_result_async(timeout=15) is None
    assert (await web.counts_async())["completed"] == 50


async def test_plain_dispatches_nothing(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(client.get("/plain") for _ in range(20)))
    assert all(a.status_code == 200 and a.json() == {"job": "none"} for a in answers)
    assert (await fastjobs.Queue("web").counts_async())["waiting"] == 0
    assert [q.name for q in await fastjobs.Queue.all_async()] == []


async def test_signup_validates_before_dispatching(client: httpx.AsyncClient) -> None:
    answer = await client.post("/signup", json={"name": "no email"})
    assert answer.status_code == 422
    assert [q.name for q in await fastjobs.Queue.all_async()] == []


async def test_unreachable_redis_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTJOBS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    fastjobs.config.reset()
    app = recipe.app
    async with app.router.lifespan_context(app):
        fastjobs.configure(connect_timeout=2.0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as c:
            answer = await c.get("/dispatch")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "unavailable" in answer.json()["error"]
