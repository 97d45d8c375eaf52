"""fastjobs: background jobs for Python, with a Rust engine and Redis as the store.

Quick start::

    import fastjobs

    class SendEmail(fastjobs.Job[dict, str]):
        queue = "emails"

        def process(self, payload: dict) -> str:
            return f"sent to {payload['to']}"

    handle = SendEmail.dispatch({"to": "ada@example.com"}).send()

and run ``fastjobs worker myapp.jobs --queue emails``.
"""

from . import metrics as metrics  # fastjobs.metrics.render(queues); it imports nothing heavy
from ._core import __version__
from .bulk import BulkDispatcher, BulkDispatchError, BulkResult
from .callbacks import CallbackStatus, verify_callback
from .chain import ChainHandle, ChainStep, JobChain
from .config import Connection, configure
from .dispatch import JobHandle, JobInfo, PendingDispatch
from .errors import (
    AuthenticationError,
    ClosedError,
    ConnectionError,
    FastJobsError,
    JobCancelled,
    JobFailed,
    JobStateError,
    JobTimeoutError,
    PayloadValidationError,
    ResultValidationError,
    SchemaError,
    StoreError,
    StoreTimeoutError,
    TLSError,
    UnknownJobError,
    UnknownQueueError,
    UnsentDispatchWarning,
)
from .events import Event
from .feedback import LogLine, Progress
from .flow import FlowHandle, FlowNode, JobFlow
from .hooks import hook, middleware, registered_hooks
from .job import FunctionJob, Job, job, registry
from .jsonlog import JsonFormatter, setup_logging
from .options import Backoff, parse_duration
from .postgres import init_db
from .queue import FailedJob, Queue, QueueLimits
from .schedule import JobScheduler, ScheduleInfo, periodic
from .worker import Worker, WorkerSummary
from .worker_registry import WorkerInfo, workers, workers_async

__all__ = [
    "__version__",
    "AuthenticationError",
    "Backoff",
    "BulkDispatchError",
    "BulkDispatcher",
    "BulkResult",
    "CallbackStatus",
    "ChainHandle",
    "ChainStep",
    "ClosedError",
    "Connection",
    "Event",
    "ConnectionError",
    "FailedJob",
    "FlowHandle",
    "FlowNode",
    "FastJobsError",
    "JobCancelled",
    "FunctionJob",
    "Job",
    "JobFailed",
    "JobStateError",
    "JobFlow",
    "JobHandle",
    "JobChain",
    "JobInfo",
    "JobScheduler",
    "JobTimeoutError",
    "JsonFormatter",
    "LogLine",
    "PayloadValidationError",
    "PendingDispatch",
    "Progress",
    "Queue",
    "QueueLimits",
    "ResultValidationError",
    "ScheduleInfo",
    "SchemaError",
    "StoreError",
    "StoreTimeoutError",
    "TLSError",
    "UnknownJobError",
    "UnknownQueueError",
    "UnsentDispatchWarning",
    "Worker",
    "WorkerInfo",
    "WorkerSummary",
    "configure",
    "hook",
    "init_db",
    "job",
    "middleware",
    "parse_duration",
    "periodic",
    "registered_hooks",
    "registry",
    "setup_logging",
    "verify_callback",
    "workers",
    "workers_async",
]
