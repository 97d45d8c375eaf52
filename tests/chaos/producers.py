"""A producer thread of the restart tests: single dispatches in a loop while the store goes
away and comes back."""

from __future__ import annotations

import threading
import time
from typing import Any

import fastjobs

from .jobs import Rec


class Producer(threading.Thread):
    """Sends one job at a time, each with a tag of its own, until told to stop. A send that
    raises may or may not have landed (the store may have taken it and died before answering):
    its tag goes to ``uncertain`` and the next call carries on with the next tag."""

    def __init__(self, name: str, queue: str) -> None:
        super().__init__(daemon=True, name=f"producer-{name}")
        self.tag = name
        self.queue = queue
        self.halt = threading.Event()
        self.sent: list[Any] = []
        self.uncertain: list[str] = []
        self.calls: list[tuple[float, str]] = []  # (started at, "" or the error's type)
        self.unexpected: list[BaseException] = []

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            tag = f"{self.tag}-{i}"
            i += 1
            started = time.monotonic()
            try:
                h = Rec.dispatch({"tag": tag, "sleep": 0.002}).on_queue(self.queue).attempts(1).send()
            except (fastjobs.StoreTimeoutError, fastjobs.ConnectionError) as e:
                self.calls.append((started, type(e).__name__))
                self.uncertain.append(tag)
                time.sleep(0.02)
                continue
            except BaseException as e:  # noqa: BLE001 - anything else fails the test
                self.unexpected.append(e)
                return
            self.calls.append((started, ""))
            self.sent.append(h)
            time.sleep(0.01)
