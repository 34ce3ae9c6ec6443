"""Workflows the hardening tests run: code that blocks, results that outgrow Kafka, a lone timer.

Activities append one line per attempt to $DP_TEST_RUN_LOG (when set), like tests/apps/basic.py.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from processor import RetryPolicy, Worker, activity, workflow
from tests.apps.basic import ThreeSteps, _log_run, async_step, fail_hard, flaky, slow, step

ONCE = RetryPolicy(maximum_attempts=1)


@activity.defn
def echo(text: str) -> str:
    _log_run("echo")
    return text


@activity.defn
def big(size: int) -> str:
    """A result of `size` bytes: over the record limit it cannot travel back."""
    _log_run("big")
    return "x" * size


@activity.defn
def pause(seconds: float) -> str:
    _log_run("pause")
    threading.Event().wait(seconds)
    return "paused"


@workflow.defn
class Doubler:
    """Echoes its input through an activity and returns it twice: a 600 KB input makes a 1.2 MB result."""

    @workflow.run
    async def run(self, text: str) -> str:
        back: str = await workflow.execute_activity(echo, text, start_to_close_timeout=30)
        return back + back


@workflow.defn
class BigResult:
    @workflow.run
    async def run(self, size: int) -> str:
        result: str = await workflow.execute_activity(big, size, start_to_close_timeout=30, retry_policy=ONCE)
        return f"got {len(result)} bytes"


@workflow.defn
class Blocking:
    """Blocks its event loop: `Event.wait` stands for time.sleep / blocking I/O in workflow code."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        threading.Event().wait(seconds)
        return "woke"


@workflow.defn
class Sleeper:
    """A lone durable timer, then done: a transaction that only fires timers."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"


@workflow.defn
class Paused:
    """One activity of `seconds` under a start-to-close timeout of `timeout` s, no retries."""

    @workflow.run
    async def run(self, seconds: float, limit: float) -> str:
        result: str = await workflow.execute_activity(pause, seconds, start_to_close_timeout=timedelta(seconds=limit),
                                                      retry_policy=ONCE)
        return result


app = Worker(workflows=[Doubler, BigResult, Blocking, Sleeper, Paused, ThreeSteps],
             activities=[echo, big, pause, step, async_step, flaky, fail_hard, slow])
