"""One job dispatched per HTTP request: fastjobs in a FastAPI app.

This file is both the recipe and the app that benches/web/run.py loads. Run it with

    FASTJOBS_URL=redis://localhost:6379 uvicorn app:app          # from benches/web
    fastjobs worker app --queue web                               # the worker, same directory

- fastjobs is configured once, when the app starts (the lifespan below), from FASTJOBS_URL
  (and FASTJOBS_PREFIX). ``configure`` only stores the settings: the first dispatch connects,
  and every later one reuses the engine's connection. Each uvicorn worker process makes its own.
- A request handler dispatches with ``await SendWelcome.dispatch(payload)``: the write to Redis
  does not block the event loop, and the handle's id goes back to the caller, who can ask for
  the job's state later (``fastjobs.JobHandle(id, "web").status()``).
- If Redis cannot be reached, the dispatch raises ``fastjobs.ConnectionError``; the handler
  below answers 503 (retryable) instead of a bare 500.

In a real application the job class lives in a module of its own (``jobs.py``) that the web
app and the worker both import, so that the worker does not import the web app. It is here
to keep the recipe in one file.

Endpoints: ``POST /signup`` (the recipe), ``GET /dispatch`` (the same dispatch, driven by the
load client), ``GET /plain`` (the same JSON answer with no dispatch: the control).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import fastjobs


class SendWelcome(fastjobs.Job[dict[str, str], None]):
    queue = "web"

    def process(self, payload: dict[str, str]) -> None:
        # ... send the welcome email to payload["user"] ...
        return None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    fastjobs.configure(
        os.environ.get("FASTJOBS_URL", "redis://localhost:6379"),
        prefix=os.environ.get("FASTJOBS_PREFIX", "fj"),
    )
    yield


app = FastAPI(title="fastjobs recipe: one job per request", lifespan=lifespan)


@app.exception_handler(fastjobs.ConnectionError)
async def redis_unreachable(request: Request, exc: fastjobs.ConnectionError) -> JSONResponse:
    return JSONResponse({"error": "the job queue is unavailable, try again"}, status_code=503, headers={"Retry-After": "1"})


class Signup(BaseModel):
    email: str


@app.post("/signup")
async def signup(body: Signup) -> dict[str, str]:
    # ... create the account ...
    handle = await SendWelcome.dispatch({"user": body.email})
    return {"job": handle.id}


@app.get("/dispatch")
async def dispatch(user: str = "bench@example.com") -> dict[str, str]:
    handle = await SendWelcome.dispatch({"user": user})
    return {"job": handle.id}


@app.get("/plain")
async def plain(user: str = "bench@example.com") -> dict[str, str]:
    return {"job": "none"}
