"""The processes' clock, and calls into a poll loop's thread.

`wall_ms` is the clock of production: the processor stamps every batch with it (the batch
clock, `workflow.now()`), timers fall due on it, and the worker judges a task's
schedule-to-start by it. A ProcessorLoop and an ActivityWorker take another clock only from
`processor.testing` (KafkaWorkflowEnvironment moves it ahead while nothing can happen).

`LoopCalls` lets another thread run a function on a poll loop's own thread, between two turns of
its loop -- where no transaction is open and its state is whole -- and wait for the answer. The
loop pays one empty-deque check per turn for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def wall_ms() -> int:
    return int(time.time() * 1000)


class LoopCalls:
    def __init__(self) -> None:
        self._pending: deque[tuple[Callable[[], Any], Future[Any]]] = deque()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """`fn` runs on the loop's thread at its next turn; the future holds what it returned or raised."""
        future: Future[Any] = Future()
        self._pending.append((fn, future))
        return future

    def run_pending(self) -> None:
        while self._pending:
            fn, future = self._pending.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
                future.set_exception(exc)

    def cancel_pending(self) -> None:
        """The loop stops: what it will never run is answered with an error."""
        while self._pending:
            _, future = self._pending.popleft()
            future.set_exception(RuntimeError("the loop stopped before it ran the call"))
