"""Callbacks: a job's outcome posted, signed, to a URL by the worker that ran it; retried on
errors; how it went recorded on the job. A real HTTP server on 127.0.0.1 receives them."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, verify_callback

from .conftest import eventually

SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server that records each request and answers with the next scripted status
    (200 once the script is used up)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        #: (path, headers, body); the headers are an http.client.HTTPMessage (names ignore case).
        self.requests: list[tuple[str, Any, bytes]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, self.headers, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self, n: int) -> list[tuple[str, Any, bytes]]:
        eventually(lambda: len(self.requests) >= n)
        return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        r = Receiver(statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class CbReport(fastjobs.Job[dict, dict]):
    queue = "cb"

    def process(self, payload: dict) -> dict:
        return {"rows": payload["rows"], "big": 12345678901234}


class CbQuiet(fastjobs.Job[int, None]):
    queue = "cb"

    def process(self, n: int) -> None:
        return None


class CbBroken(fastjobs.Job[int, None]):
    queue = "cb"
    attempts = 2
    backoff = 0

    def process(self, n: int) -> None:
        raise ValueError(f"bad input {n}")


class CbAsyncReport(fastjobs.Job[int, int]):
    queue = "cb"

    async def process(self, n: int) -> int:
        return n * 2


JOBS = [CbReport, CbQuiet, CbBroken, CbAsyncReport]


def worker(start_worker: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("callback_secret", SECRET)
    kwargs.setdefault("callback_backoff", 0.01)
    return start_worker(queues=["cb"], jobs=kwargs.pop("jobs", JOBS), **kwargs)


def test_a_completed_job_posts_its_outcome_signed(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    h = (CbReport.dispatch({"rows": 3}).meta({"user": 7}).callback(r.url + "/done", headers={"Authorization": "Bearer t0k", "X-Trace": "abc"})
         .send())
    assert h.wait_result(10) == {"rows": 3, "big": 12345678901234}
    [(path, headers, body)] = r.got(1)
    assert path == "/done"
    assert verify_callback(SECRET, body, headers["Fastjobs-Signature"])
    assert verify_callback(SECRET.encode(), body, headers["Fastjobs-Signature"])
    assert not verify_callback("another secret", body, headers["Fastjobs-Signature"])
    assert not verify_callback(SECRET, body + b" ", headers["Fastjobs-Signature"])
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"fastjobs/{fastjobs.__version__}"
    assert headers["Fastjobs-Job-Id"] == h.id
    assert headers["Authorization"] == "Bearer t0k" and headers["X-Trace"] == "abc"
    sent = json.loads(body)
    at = sent.pop("at")
    assert abs(at / 1000 - time.time()) < 60
    assert sent == {"job_id": h.id, "queue": "cb", "name": "CbReport", "state": "completed", "attempts": 1,
                    "result": {"rows": 3, "big": 12345678901234}, "meta": {"user": 7}}
    status = eventually(lambda: h.callback_status())
    assert (status.state, status.event, status.url, status.attempts, status.status_code, status.error) == (
        "delivered", "completed", r.url + "/done", 1, 200, None)
    info = h.info()
    assert info.state == "completed" and info.callback == status


def test_the_signature_is_hmac_sha256_of_time_and_body(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    CbQuiet.dispatch(1).callback(r.url).send().wait_result(10)
    [(_, headers, body)] = r.got(1)
    t, v1 = (part.split("=", 1)[1] for part in headers["Fastjobs-Signature"].split(","))
    assert v1 == hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert json.loads(body)["result"] is None
    # Old posts are refused (replays), as are malformed headers.
    old = int(t) - 301
    stale = f"t={old},v1=" + hmac.new(SECRET.encode(), f"{old}.".encode() + body, hashlib.sha256).hexdigest()
    assert not verify_callback(SECRET, body, stale)
    assert verify_callback(SECRET, body, stale, tolerance=3600)
    for bad in [None, "", "v1=" + v1, f"t={t}", f"t=x,v1={v1}", "garbage"]:
        assert not verify_callback(SECRET, body, bad)
    assert verify_callback(SECRET, body, f"t={t},v1=0000,v1={v1}")  # any v1 may match (secret rotation)
    with pytest.raises(TypeError, match="raw bytes"):
        verify_callback(SECRET, json.loads(body), headers["Fastjobs-Signature"])  # type: ignore[arg-type]


def test_a_job_that_fails_for_good_posts_its_failure_callback(receiver: Any, start_worker: Any) -> None:
    done, failed = receiver(), receiver()
    worker(start_worker)
    h = CbBroken.dispatch(5).callback(done.url).failure_callback(failed.url + "/failed", headers={"X-Kind": "failure"}).send()
    with pytest.raises(fastjobs.JobFailed):
        h.wait_result(10)
    [(path, headers, body)] = failed.got(1)
    assert path == "/failed" and headers["X-Kind"] == "failure"
    assert verify_callback(SECRET, body, headers["Fastjobs-Signature"])
    sent = json.loads(body)
    assert (sent["state"], sent["attempts"], sent["error"], sent["meta"]) == (
        "failed", 2, {"type": "ValueError", "message": "bad input 5"}, None)
    assert "result" not in sent
    status = eventually(lambda: h.callback_status())
    assert (status.state, status.event) == ("delivered", "failed")
    assert done.requests == []  # the completion callback is not posted for a failure (nor for the retry)


def test_a_job_without_the_matching_callback_posts_nothing(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    failing = CbBroken.dispatch(1).callback(r.url).send()
    done = CbQuiet.dispatch(1).failure_callback(r.url).send()
    with pytest.raises(fastjobs.JobFailed):
        failing.wait_result(10)
    done.wait_result(10)
    # A later job's callback: the earlier jobs' outcomes were acknowledged (and any callback of
    # theirs under way) before it.
    CbQuiet.dispatch(2).callback(r.url + "/last").send().wait_result(10)
    [(path, _, _)] = r.got(1)
    assert path == "/last"
    assert failing.callback_status() is None and done.callback_status() is None


def test_a_server_that_is_down_gets_the_retries_and_the_job_records_the_failure(start_worker: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    worker(start_worker, callback_attempts=3)
    h = CbReport.dispatch({"rows": 1}).callback(url).send()
    assert h.wait_result(10) == {"rows": 1, "big": 12345678901234}
    status = eventually(lambda: (s := h.callback_status()) and s.state == "failed" and s)
    assert (status.attempts, status.status_code, status.url) == (3, None, url)
    assert status.error and "connect" in status.error.lower()
    # The job's own outcome is untouched.
    assert h.status() == "completed"
    assert h.info().result == {"rows": 1, "big": 12345678901234}
    assert Queue("cb").counts()["completed"] == 1


def test_a_500_is_tried_again_and_then_delivered(receiver: Any, start_worker: Any) -> None:
    r = receiver([500, 503])
    worker(start_worker)
    h = CbQuiet.dispatch(1).callback(r.url).send()
    h.wait_result(10)
    status = eventually(lambda: (s := h.callback_status()) and s.state == "delivered" and s)
    assert (status.attempts, status.status_code, status.error) == (3, 200, None)
    bodies = [b for _, _, b in r.got(3)]
    assert len(set(bodies)) == 1  # the same body each time, signed again


def test_a_4xx_answer_is_not_tried_again(receiver: Any, start_worker: Any) -> None:
    r = receiver([404])
    worker(start_worker)
    h = CbQuiet.dispatch(1).callback(r.url).send()
    h.wait_result(10)
    status = eventually(lambda: (s := h.callback_status()) and s.state == "failed" and s)
    assert (status.attempts, status.status_code, status.error) == (1, 404, "HTTP 404")
    assert len(r.requests) == 1
    assert h.status() == "completed"


def test_a_429_is_tried_again(receiver: Any, start_worker: Any) -> None:
    r = receiver([429])
    worker(start_worker)
    h = CbQuiet.dispatch(1).callback(r.url).send()
    h.wait_result(10)
    status = eventually(lambda: (s := h.callback_status()) and s.state == "delivered" and s)
    assert status.attempts == 2


def test_async_handlers_and_bulk_dispatch_carry_callbacks(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker, jobs=[CbAsyncReport])
    result = CbAsyncReport.dispatch_many([1, 2, 3], callback={"url": r.url + "/bulk", "headers": {"X-Batch": "b1"}})
    single = CbAsyncReport.dispatch(10).with_("callback", r.url + "/one").send()
    assert single.wait_result(10) == 20
    got = r.got(4)
    bulk = sorted(json.loads(b)["result"] for p, h, b in got if p == "/bulk" and h["X-Batch"] == "b1")
    assert bulk == [2, 4, 6]
    assert {json.loads(b)["job_id"] for p, _, b in got if p == "/bulk"} == set(result)


def test_builders_in_a_bulk_dispatcher_keep_their_callbacks(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    fastjobs.BulkDispatcher([CbQuiet.dispatch(1).callback(r.url + "/a"), CbQuiet.dispatch(2), CbQuiet.dispatch(3).callback(r.url + "/c")]).dispatch()
    eventually(lambda: Queue("cb").counts()["completed"] == 3)
    assert sorted(p for p, _, _ in r.got(2)) == ["/a", "/c"]


def test_without_a_secret_callbacks_go_unsigned(receiver: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("FASTJOBS_CALLBACK_SECRET", raising=False)
    r = receiver()
    w = worker(start_worker, callback_secret=None)
    CbQuiet.dispatch(1).callback(r.url).send().wait_result(10)
    CbQuiet.dispatch(2).callback(r.url).send().wait_result(10)
    got = r.got(2)
    assert all("Fastjobs-Signature" not in h for _, h, _ in got)
    w.stop()
    assert [m for m in caplog.messages if "unsigned" in m] and len([m for m in caplog.messages if "unsigned" in m]) == 1


def test_the_secret_comes_from_the_environment(receiver: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTJOBS_CALLBACK_SECRET", "from-env")
    r = receiver()
    worker(start_worker, callback_secret=None)
    CbQuiet.dispatch(1).callback(r.url).send().wait_result(10)
    [(_, headers, body)] = r.got(1)
    assert verify_callback("from-env", body, headers["Fastjobs-Signature"])


def test_a_stopping_worker_records_callbacks_it_could_not_deliver(start_worker: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    w = worker(start_worker, callback_attempts=5, callback_backoff=60, grace=0.2)
    h = CbQuiet.dispatch(1).callback(url).send()
    h.wait_result(10)
    eventually(lambda: (s := h.callback_status()) and s.state == "retrying")
    w.stop()
    status = h.callback_status()
    assert status is not None and status.state == "failed" and status.attempts == 1
    assert status.error is not None and status.error.startswith("the worker stopped before the callback was delivered")


def test_removing_a_job_removes_its_callback_record(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    h = CbQuiet.dispatch(1).job_id("removed-1").callback(r.url).send()
    h.wait_result(10)
    eventually(lambda: h.callback_status())
    Queue("cb").remove(h.id)
    assert h.callback_status() is None


@pytest.mark.parametrize(
    ("url", "headers", "error", "match"),
    [
        ("ftp://example.com/x", None, ValueError, "must be http:// or https://"),
        ("example.com/hook", None, ValueError, "not a valid URL"),
        ("http://", None, ValueError, "callback"),
        ("https://exa mple.com/", None, ValueError, "spaces or control characters"),
        ("https://example.com/\n", None, ValueError, "spaces or control characters"),
        (b"https://example.com", None, TypeError, "URL must be a str"),
        ("https://example.com", {"X-A": 1}, TypeError, "must have a str value"),
        ("https://example.com", {1: "a"}, TypeError, "header names must be str"),
        ("https://example.com", ["X-A"], TypeError, "headers must be a dict"),
        ("https://example.com", {"Bad Name": "a"}, ValueError, "not a valid HTTP header name"),
        ("https://example.com", {"X-A:": "a"}, ValueError, "not a valid HTTP header name"),
        ("https://example.com", {"content-type": "text/plain"}, ValueError, "set by fastjobs"),
        ("https://example.com", {"Fastjobs-Signature": "t=1,v1=x"}, ValueError, "set by fastjobs"),
        ("https://example.com", {"X-A": "line\r\nInjected: 1"}, ValueError, "printable ASCII"),
        ("https://example.com", {"X-A": "a", "x-a": "b"}, ValueError, "given twice"),
    ],
)
def test_bad_callbacks_raise_at_dispatch_and_write_nothing(url: Any, headers: Any, error: type[Exception], match: str) -> None:
    for method in ("callback", "failure_callback"):
        with pytest.raises(error, match=match) as e:
            getattr(CbQuiet.dispatch(1), method)(url, headers=headers)
        assert method in str(e.value)
    with pytest.raises(error, match=match):
        CbQuiet.dispatch(1).with_("callback", {"url": url, "headers": headers})
    with pytest.raises(error, match=match):
        CbQuiet.dispatch_many([1, 2], callback={"url": url, "headers": headers})
    with pytest.raises(ValueError, match="url and headers"):
        CbQuiet.dispatch(1).with_("failure_callback", {"href": "https://example.com"})
    assert Queue("cb").counts()["waiting"] == 0


def test_worker_callback_settings_are_checked() -> None:
    for kwargs, match in [({"callback_attempts": 0}, "callback_attempts"), ({"callback_attempts": 101}, "callback_attempts"),
                          ({"callback_backoff": 0}, "callback_backoff"), ({"callback_backoff": float("nan")}, "callback_backoff"),
                          ({"callback_secret": ""}, "callback_secret")]:
        with pytest.raises(ValueError, match=match):
            fastjobs.Worker(["cb"], jobs=JOBS, **kwargs)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_the_command_and_its_pool_children_sign_with_the_secret_given(receiver: Any, spawn_worker: Any, start_method: str) -> None:
    from tests.apps.jobs import Echo

    r = receiver()
    w = spawn_worker("-q", "default", "--callback-secret", "cli-secret", "--callback-backoff", "0.01", "-p", "1",
                     "--start-method", start_method)
    h = Echo.dispatch({"n": 5}).callback(r.url).send()
    assert h.wait_result(30) == {"n": 5}
    [(_, headers, body)] = r.got(1)
    assert verify_callback("cli-secret", body, headers["Fastjobs-Signature"])
    w.proc.terminate()
    w.output()


def test_the_command_refuses_bad_callback_settings(spawn_worker: Any) -> None:
    w = spawn_worker("-q", "default", "--callback-attempts", "0")
    assert "--callback-attempts must be a whole number from 1 to 100" in w.output()
    assert w.proc.returncode == 2


def test_the_steps_of_a_chain_keep_their_callbacks(receiver: Any, start_worker: Any) -> None:
    r = receiver()
    worker(start_worker)
    fastjobs.JobChain([CbQuiet.dispatch(1).callback(r.url + "/first"), CbReport.dispatch({"rows": 2}).callback(r.url + "/second")]).dispatch()
    got = r.got(2)
    assert sorted(p for p, _, _ in got) == ["/first", "/second"]
