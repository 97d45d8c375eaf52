"""Taskiq adapter (taskiq-redis ``RedisStreamBroker``) for the peer benchmark
(see ../CONTRACT.md).

RedisStreamBroker is the broker taskiq-redis recommends (Redis stream + consumer group,
acknowledgements); ListQueueBroker (no acks) and PubSubBroker (broadcast) are not job queues
with the same guarantees.

Enqueue: taskiq has no bulk API; ``task.kiq()`` (one XADD per call) is run concurrently with
asyncio.gather in windows of TASKIQ_ENQUEUE_CONCURRENCY calls. No result backend (results are
not stored). Delays: taskiq's only delay API is scheduling, ``task.schedule_by_time(source,
when)`` with taskiq-redis's ``ListRedisScheduleSource``, run by a taskiq scheduler process
(schedules re-read on every 1 s loop tick, the loop's minimum); W5 therefore starts that scheduler
process next to the one worker process.
Worker: taskiq's receiver (``taskiq.api.run_receiver_task``, what the ``taskiq worker`` CLI
runs in each child process) in one process, ``max_async_tasks`` tuned for no-op jobs.
Tunables (environment): TASKIQ_ENQUEUE_CONCURRENCY, TASKIQ_MAX_ASYNC_TASKS,
TASKIQ_MAX_PREFETCH, TASKIQ_XREAD_COUNT.
"""

import asyncio
import os
import sys
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common_async import ADAPTERS_DIR, AsyncPeerBase, env_int, main

ENQUEUE_CONCURRENCY = env_int("TASKIQ_ENQUEUE_CONCURRENCY", 64)
MAX_ASYNC_TASKS = env_int("TASKIQ_MAX_ASYNC_TASKS", 500)
MAX_PREFETCH = env_int("TASKIQ_MAX_PREFETCH", 0)
XREAD_COUNT = env_int("TASKIQ_XREAD_COUNT", 100)
# W2P: tasks in flight per worker process, per task body (TASKIQ_POOL_MAX_ASYNC_TASKS overrides):
# W2's 500 for the INCR body; 4 for the cpu body (1, 4, 16 within noise at 2 processes, 32-64
# behind).
POOL_MAX_ASYNC_TASKS = {"incr": 500, "cpu": 4}


class TaskiqPeer(AsyncPeerBase):
    system = "taskiq"

    def __init__(self):
        from importlib.metadata import version

        self.version = version("taskiq")
        self.redis_version = version("taskiq-redis")
        self.t = None

    def pool_max_async_tasks(self):
        return env_int("TASKIQ_POOL_MAX_ASYNC_TASKS", POOL_MAX_ASYNC_TASKS[self.body])

    def settings(self, workload):
        if workload == "W2P":
            return {
                "broker": f"taskiq_redis.RedisStreamBroker (taskiq-redis {self.redis_version})",
                "enqueue": f"{self.body} task: task.kiq() x n, asyncio.gather in windows of "
                           f"{ENQUEUE_CONCURRENCY}, as in W1",
                "worker": f"taskiq worker _tasks_taskiq:broker --workers {self.processes} "
                          f"--max-async-tasks {self.pool_max_async_tasks()} --log-level WARNING "
                          f"(a process manager and {self.processes} worker processes, asyncio)",
                "max_prefetch": MAX_PREFETCH,
                "xread_count": XREAD_COUNT,
                "result_backend": None,
            }
        s = {
            "broker": f"taskiq_redis.RedisStreamBroker (taskiq-redis {self.redis_version})",
            "enqueue": f"task.kiq() x n, asyncio.gather in windows of {ENQUEUE_CONCURRENCY}",
            "delay": "task.schedule_by_time(ListRedisScheduleSource, now+2s) + taskiq scheduler "
                     "process (update_interval=0: schedules re-read every 1 s loop tick; loop 1 s is its minimum)",
            "worker": "taskiq.api.run_receiver_task, 1 process, asyncio",
            "max_async_tasks": MAX_ASYNC_TASKS,
            "max_prefetch": MAX_PREFETCH,
            "xread_count": XREAD_COUNT,
            "result_backend": None,
        }
        return s

    def _env(self):
        return {
            "TASKIQ_MAX_ASYNC_TASKS": str(MAX_ASYNC_TASKS),
            "TASKIQ_MAX_PREFETCH": str(MAX_PREFETCH),
            "TASKIQ_XREAD_COUNT": str(XREAD_COUNT),
            "TASKIQ_POOL_SIZE": str(max(100, MAX_ASYNC_TASKS + 10)),
        }

    async def setup(self, url, workload):
        os.environ["BENCH_REDIS_URL"] = url
        os.environ["TASKIQ_POOL_SIZE"] = str(ENQUEUE_CONCURRENCY + 10)
        os.environ["TASKIQ_XREAD_COUNT"] = str(XREAD_COUNT)
        import _tasks_taskiq

        self.t = _tasks_taskiq
        # Producer start-up: creates the stream's consumer group (from "$"), so jobs sent
        # before the worker starts (W2) are delivered to it.
        await self.t.broker.startup()
        if workload == "W5":
            await self.t.schedule_source.startup()

    async def enqueue_bulk(self, items):
        kiq = (self.t.cpu if self.body == "cpu" else self.t.noop).kiq
        step = ENQUEUE_CONCURRENCY
        for k in range(0, len(items), step):
            await asyncio.gather(*(kiq(p) for p in items[k:k + step]))

    async def dispatch_lat(self, item):
        await self.t.lat.kiq(item)

    async def dispatch_one_async(self, item):
        await self.t.noop.kiq(item)

    async def dispatch_late(self, item, delay_s):
        when = datetime.now(timezone.utc) + timedelta(seconds=delay_s)
        await self.t.late.schedule_by_time(self.t.schedule_source, when, item)

    def worker_argv(self, workload):
        return ([sys.executable, "-c", "import _tasks_taskiq; _tasks_taskiq.run_worker()"],
                self._env())

    def pool_argv(self):
        # Through _launch.py: the worker processes taskiq forks die with the adapter too.
        env = dict(self._env(), TASKIQ_MAX_ASYNC_TASKS=str(self.pool_max_async_tasks()))
        return ([sys.executable, os.path.join(ADAPTERS_DIR, "_launch.py"), "taskiq", "worker",
                 "_tasks_taskiq:broker", "--workers", str(self.processes),
                 "--max-async-tasks", env["TASKIQ_MAX_ASYNC_TASKS"], "--max-prefetch", str(MAX_PREFETCH),
                 "--log-level", "WARNING"], env)

    def helper_argvs(self, workload):
        if workload != "W5":
            return []
        return [("scheduler",
                 [sys.executable, "-c", "import _tasks_taskiq; _tasks_taskiq.run_scheduler()"],
                 self._env())]

    async def close(self):
        if self.t is not None:
            try:
                await self.t.schedule_source.shutdown()
            except Exception:
                pass
            await self.t.broker.shutdown()


if __name__ == "__main__":
    sys.exit(main(TaskiqPeer()))
