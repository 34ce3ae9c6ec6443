"""One attempt of a local activity (`workflow.execute_local_activity`), run by the processor in
the middle of the workflow task that asks for it.

The function runs on a thread of a small pool, so that its own clock, random, I/O and event loop
are its business (the determinism guard watches only the workflow's thread), and so that the
attempt's start-to-close timeout can be enforced: past it the attempt is recorded as timed out
and the thread is left to finish on its own (Python cannot stop it). While the workflow's
thread waits for it, the processor's activation deadline (SIGALRM, engine/deadline.py) is paused:
a local activity is not workflow code blocking its loop. What the attempt returned or raised is
recorded in history (`LocalActivityRecorded`): a replay reads it and never calls the function.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

from processor import activity
from processor._failure import Failure, failure_from_exception
from processor._payload import Payload, to_payload
from processor._runtime import _guard
from processor.exceptions import ApplicationError

# One attempt runs at most this long: the processor's transaction waits for it (its timeout is
# DP_TRANSACTION_TIMEOUT_MS, 10 s by default). Longer work is an activity's.
MAX_ATTEMPT_S = 5.0
# A workflow task runs local activities for this long at most; the next one then starts a new
# task (a 1 ms durable timer), so that one transaction stays short and a crash repeats little.
STEP_BUDGET_MS = 1_000

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-activity")
        return _pool


@contextmanager
def _deadline_paused() -> Iterator[None]:
    """Pause the interval timer of the activation deadline (if one is armed on this thread)."""
    armed = 0.0
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        armed, _ = signal.getitimer(signal.ITIMER_REAL)
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, armed)


def run_attempt(fn: Callable[..., Any], args: tuple[Any, ...], info: activity.ActivityInfo,
                timeout_s: float) -> tuple[Payload | None, Failure | None, int]:
    """(result payload, None, ms) or (None, failure, ms) of one attempt of `fn(*args)`; its
    clock and the pool are the runner's, not workflow code's (the guard is suspended)."""
    with _guard.suspended():
        return _run(fn, args, info, timeout_s)


def _run(fn: Callable[..., Any], args: tuple[Any, ...], info: activity.ActivityInfo,
         timeout_s: float) -> tuple[Payload | None, Failure | None, int]:
    ctx = activity.ActivityContext(info=info, heartbeat_fn=lambda _details: None)

    def call() -> Any:
        token = activity._set_context(ctx)  # noqa: SLF001 - the runner is the context's owner
        try:
            if inspect.iscoroutinefunction(fn):
                return asyncio.run(fn(*args))
            return fn(*args)
        finally:
            activity._reset_context(token)  # noqa: SLF001

    began = time.perf_counter()
    with _deadline_paused():
        future = _executor().submit(contextvars.Context().run, call)
        try:
            value = future.result(timeout=timeout_s)
        except FutureTimeout:
            took = _ms(began)
            error = ApplicationError(f"local activity {info.activity_type!r} attempt {info.attempt} exceeded its "
                                     f"start_to_close_timeout of {timeout_s:g}s", type="StartToCloseTimeout")
            return None, failure_from_exception(error), took
        except Exception as exc:  # noqa: BLE001 - the attempt's failure, recorded and retried by its policy
            return None, failure_from_exception(exc), _ms(began)
    took = _ms(began)
    try:
        return to_payload(value), None, took
    except Exception as exc:  # noqa: BLE001 - a result that is no payload fails the attempt
        return None, failure_from_exception(exc), took


def _ms(began: float) -> int:
    return int((time.perf_counter() - began) * 1000)
