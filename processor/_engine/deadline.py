"""A wall-clock deadline on one activation of workflow code (the processor's deadlock detector).

Workflow code that blocks its event loop (`time.sleep`, blocking I/O, a long computation) blocks the
processor's single thread: every other workflow of the process waits, and past the transaction
timeout the broker aborts the open transaction and fences the producer. Left alone, the same
command is applied again after the restart and blocks again -- a crash loop.

So each activation runs under a deadline: an interval timer (SIGALRM) raises `ActivationBlocked`
inside the blocked code (a signal interrupts `time.sleep` and pure-Python loops; a C extension that
never releases the GIL cannot be interrupted, and is not caught). The engine then discards the
instance and holds the workflow with the reason, as it does for nondeterminism, so a hotfix can
resume it. If the workflow code swallows the exception, the timer raises again every
`REPEAT_S` until the activation ends, and the activation counts as blocked all the same.

Signals reach only the main thread: off it (a processor run inside a test thread) the deadline is
not enforced, and `enforced` says so. Tried and rejected: a watchdog thread cannot interrupt
the main thread's `time.sleep`, and `sys.settrace` costs ~10x on every workflow step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, TypeVar

from processor._runtime import Completion, WorkflowInstance, WorkflowTaskError

REPEAT_S = 0.25
T = TypeVar("T")


class ActivationBlocked(BaseException):  # noqa: N818 - engine control flow, not an error type
    """Raised inside workflow code that overran its activation deadline. A BaseException so that
    `except Exception:` in workflow code does not swallow it; a bare `except:` would, and the
    deadline then raises again."""


class WorkflowBlockedError(WorkflowTaskError):
    """Workflow code overran its activation deadline (the reason a blocked workflow is held)."""


class Deadline:
    def __init__(self) -> None:
        self.enforced = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        self._armed = False
        self.expired = False
        if self.enforced:
            signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        if not self._armed:
            return
        self.expired = True
        signal.setitimer(signal.ITIMER_REAL, REPEAT_S)
        raise ActivationBlocked

    def arm(self, seconds: float) -> None:
        self.expired = False
        if self.enforced and seconds > 0:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm(self) -> None:
        if self._armed:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def call(self, fn: Callable[[], T], limit: float) -> tuple[T | None, bool]:
        """`fn()` with at most `limit` seconds of blocking: (its result, False), or (None, True)
        if it overran (a query handler or an update validator: workflow code that runs outside
        an activation). What `fn` raises otherwise goes to the caller."""
        try:
            self.arm(limit)
            try:
                result = fn()
            finally:
                self.disarm()
        except ActivationBlocked:
            return None, True
        return (None, True) if self.expired else (result, False)

    def activate(self, instance: WorkflowInstance, events: Sequence[Mapping[str, Any]], limit: float, who: str,
                 doing: str) -> Completion:
        """`instance.activate(events)` with at most `limit` seconds of blocking; past it, a
        Completion whose error holds the workflow with the reason."""
        try:
            self.arm(limit)
            try:
                completion = instance.activate(events)
            finally:
                self.disarm()
        except ActivationBlocked:
            self.expired = True
        if not self.expired:
            return completion
        return Completion([], WorkflowBlockedError(
            f"{who} blocked the processor's event loop for more than {limit:g}s ({doing} its code): time.sleep, "
            "blocking I/O or a long computation in workflow code? Do blocking work in an activity and wait with "
            "asyncio.sleep or workflow.wait_condition; DP_ACTIVATION_DEADLINE_MS sets the limit. The workflow is "
            "held until code that does not block is deployed."), False)
