"""procrastinate's worker for the PostgreSQL bench: python _procrastinate_worker.py CONCURRENCY"""

import asyncio
import logging
import sys

from _pg_common import die_with_parent
from _procrastinate_tasks import app


async def run(concurrency: int) -> None:
    async with app.open_async():
        await app.run_worker_async(queues=["bench"], concurrency=concurrency, install_signal_handlers=False)


if __name__ == "__main__":
    die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(int(sys.argv[1])))
