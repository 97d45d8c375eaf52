"""fastjobs' jobs for the PostgreSQL bench (imported by `fastjobs worker _fastjobs_pg_jobs`)."""

from _pg_common import bump, started

import fastjobs


class BenchNoop(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        bump()


class BenchLat(fastjobs.Job[dict, None]):
    queue = "bench"

    def process(self, p: dict) -> None:
        started(p["i"])
