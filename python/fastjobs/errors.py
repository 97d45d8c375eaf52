"""The exceptions fastjobs raises. The Rust engine maps its errors onto these classes."""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "FastJobsError",
    "ConnectionError",
    "StoreTimeoutError",
    "AuthenticationError",
    "StoreError",
    "SchemaError",
    "TLSError",
    "ClosedError",
    "JobCancelled",
    "JobFailed",
    "JobStateError",
    "JobTimeoutError",
    "PayloadValidationError",
    "ResultValidationError",
    "UnknownJobError",
    "UnknownQueueError",
    "UnsentDispatchWarning",
]


class FastJobsError(Exception):
    """Base class of every fastjobs error."""


class ConnectionError(FastJobsError, builtins.ConnectionError):
    """Redis could not be reached (the message names the URL, password masked). Retryable."""


class StoreTimeoutError(ConnectionError):
    """Redis did not answer within the configured response timeout. Retryable."""


class AuthenticationError(FastJobsError):
    """Redis refused the credentials of the URL (WRONGPASS), wants some it does not give
    (NOAUTH), or the user lacks a permission fastjobs needs (NOPERM). Not retryable: the
    settings must change. The message names the URL, password masked."""


class StoreError(FastJobsError):
    """Redis answered with an error, or with something fastjobs did not expect."""


class SchemaError(StoreError):
    """The PostgreSQL database lacks the fastjobs schema this version needs (none yet, or an
    older one): ``fastjobs db init URL`` (or ``fastjobs.init_db(url)``) creates or upgrades
    it. Not retryable until then."""


class TLSError(StoreError):
    """TLS to the PostgreSQL server cannot work with the URL's settings: its certificate does
    not verify against ``sslrootcert``, it refused the handshake (a client certificate it
    wants?), it does not accept TLS while ``sslmode`` asks for it, or a file of ``sslrootcert``,
    ``sslcert`` or ``sslkey`` cannot be read. Not retryable: the settings (or the server's)
    must change. The message says which."""


class ClosedError(FastJobsError, RuntimeError):
    """The engine was used after it was closed."""


class UnknownJobError(FastJobsError, LookupError):
    """No job with that id exists in that queue (never dispatched, or expired)."""


class UnknownQueueError(FastJobsError, LookupError):
    """A control names a queue that nothing ever dispatched to or consumed (misspelt?); the
    message lists the queues that exist."""


class JobFailed(FastJobsError):
    """The job failed for good: its attempts are used up, or it could not be run at all.

    ``exc_type``, ``message`` and ``traceback`` describe the error the job's last attempt
    raised (``traceback`` is the formatted text from the worker).
    """

    def __init__(self, job_id: str, queue: str, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"job {job_id} on queue {queue!r} failed: {exc_type}: {message}")
        self.job_id = job_id
        self.queue = queue
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback

    @classmethod
    def from_error(cls, job_id: str, queue: str, error: dict[str, Any]) -> JobFailed:
        return cls(
            job_id,
            queue,
            str(error.get("type", "Error")),
            str(error.get("message", "")),
            str(error.get("traceback", "")),
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.job_id, self.queue, self.exc_type, self.message, self.traceback))


class JobCancelled(FastJobsError):
    """The job was cancelled (``cancel()``, or ``Queue.empty()``): raised by ``wait_result``,
    and by ``check_cancelled()`` inside a handler whose job was asked to stop. A handler that
    raises it (or lets it through) ends its job as cancelled: it is not retried."""

    def __init__(self, message: str = "the job was cancelled", job_id: str | None = None, queue: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.queue = queue

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.job_id, self.queue))


class JobStateError(FastJobsError):
    """The job's state does not allow what was asked: cancelling a job that finished,
    removing one that is running, retrying one that did not fail. ``state`` says where it is."""

    def __init__(self, message: str, job_id: str, queue: str, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.queue = queue
        self.state = state

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.job_id, self.queue, self.state))


class JobTimeoutError(FastJobsError, builtins.TimeoutError):
    """Raised inside a handler that ran past its ``timeout``; the attempt fails with it."""


class _SchemaError(FastJobsError, ValueError):
    """A value that does not fit its declared type: ``job`` and ``path`` name where."""

    def __init__(self, message: str, job: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.job = job
        self.path = path

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.job, self.path))


class PayloadValidationError(_SchemaError):
    """A payload does not fit the type its job declares (a pydantic model, a dataclass or a
    TypedDict): raised at dispatch, before anything is written. The message names the job and
    the field (``Export: payload.items[2].sku: expected str, got int``); ``job`` and ``path``
    hold them."""


class ResultValidationError(_SchemaError):
    """A handler's result does not fit the result type its job declares: the attempt fails
    with it (in the worker). ``job`` and ``path`` as in ``PayloadValidationError``."""


class UnsentDispatchWarning(RuntimeWarning):
    """A dispatch builder was garbage-collected without ``.send()`` or ``await``."""
