"""The README's Django recipe, served by Django's test client: its views (the README block that
imports django.http, as written) dispatch the quick start's SendEmail, and a worker runs them."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import fastjobs

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(marker: str) -> str:
    for code in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        if marker in code:
            return str(code)
    raise AssertionError(f"README.md has no python block with {marker!r}")


@pytest.fixture
def django_views(tmp_path: Path, monkeypatch: Any) -> Any:
    import django
    from django.conf import settings

    # The README's jobs register in a registry of their own (as tests/test_readme.py does).
    monkeypatch.setattr(sys.modules["fastjobs.job"], "_REGISTRY", {})
    (tmp_path / "tasks.py").write_text(readme_block("# tasks.py"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tasks", raising=False)
    views = types.ModuleType("readme_django_views")
    exec(compile(readme_block("from django.http"), "README.md (Django views)", "exec"), views.__dict__)
    from django.urls import path

    urls = types.ModuleType("readme_django_urls")
    urls.urlpatterns = [path("signup", views.signup), path("signup-async", views.signup_async)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "readme_django_urls", urls)
    if not settings.configured:
        settings.configure(ROOT_URLCONF="readme_django_urls", ALLOWED_HOSTS=["*"], SECRET_KEY="test", DEBUG=False,
                           MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={})
        django.setup()
    yield views
    sys.modules.pop("tasks", None)  # not monkeypatch.delitem: its undo would put the module back


async def test_the_django_views_dispatch_and_a_worker_runs_the_jobs(django_views: Any, start_worker: Any) -> None:
    from django.test import AsyncClient, Client
    from tasks import SendEmail  # type: ignore[import-not-found]

    start_worker(queues=["emails"], jobs=[SendEmail])
    sync_answer = await _in_thread(lambda: Client().post("/signup", {"email": "ada@example.com"}))
    assert sync_answer.status_code == 202, sync_answer.content
    async_answer = await AsyncClient().post("/signup-async", {"email": "bob@example.com"})
    assert async_answer.status_code == 202, async_answer.content
    for answer, to in ((sync_answer, "ada@example.com"), (async_answer, "bob@example.com")):
        handle: fastjobs.JobHandle[str] = fastjobs.JobHandle(answer.json()["job"], "emails")
        assert await handle.wait_result_async(timeout=10) == f"sent to {to}"


async def _in_thread(call: Any) -> Any:
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, call)
