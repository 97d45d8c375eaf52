"""fastjobs' web dashboard: queues, throughput, failed jobs, schedules, jobs and workers, as a
plain ASGI app (``fastjobs dashboard`` serves it with uvicorn; ``app()`` mounts it in yours)."""

from __future__ import annotations

from .app import TOKEN_ENV, Dashboard

__all__ = ["app", "Dashboard", "TOKEN_ENV"]


def app(*, token: str | None = None, read_only: bool = False, connection: str = "default",
        sample_every: float = 5.0, history: int = 720) -> Dashboard:
    """The dashboard as an ASGI app. ``token`` (default: ``$FASTJOBS_DASHBOARD_TOKEN``) guards
    the actions; without one, or with ``read_only``, they are hidden and refused. Every
    ``sample_every`` seconds it samples the queues' counters, keeping ``history`` points."""
    return Dashboard(token=token, read_only=read_only, connection=connection, sample_every=sample_every, history=history)
