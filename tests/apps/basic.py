"""Workflows the integration and chaos tests run in real processor and worker processes.

Activities append one line per attempt to $DP_TEST_RUN_LOG (when set), so tests can count how
often each activity really ran.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import timedelta

from processor import RetryPolicy, Worker, activity, workflow
from processor.exceptions import ActivityError, ApplicationError, ChildWorkflowError


def _log_run(tag: str) -> None:
    path = os.environ.get("DP_TEST_RUN_LOG")
    if path:
        info = activity.info()
        with open(path, "a") as f:
            f.write(f"{info.workflow_id} {info.activity_seq} {info.attempt} {tag}\n")


@activity.defn
def step(name: str, value: int) -> int:
    _log_run(name)
    activity.logger.info("step %s of %d", name, value)
    delay = float(os.environ.get("DP_TEST_ACTIVITY_DELAY", "0"))
    if delay:
        time.sleep(random.uniform(0, delay))
    return value + 1


@activity.defn
async def async_step(value: int) -> int:
    _log_run("async")
    await asyncio.sleep(0)
    return value * 2


@activity.defn
def flaky(times: int) -> str:
    """Fails its first `times` attempts with a retryable error."""
    _log_run("flaky")
    attempt = activity.info().attempt
    if attempt <= times:
        raise RuntimeError(f"transient failure on attempt {attempt}")
    return f"ok after {attempt} attempts"


@activity.defn
def fail_hard(reason: str) -> str:
    raise ApplicationError(reason, type="Rejected", non_retryable=True)


@activity.defn
def slow(seconds: float, heartbeat: bool) -> str:
    _log_run("slow")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if heartbeat:
            activity.heartbeat("working")
        time.sleep(0.05)
    return "finished"


@workflow.defn
class Timeouts:
    """Runs `slow` under the timeout named by `which`; returns how it ended."""

    @workflow.run
    async def run(self, which: str) -> str:
        once = RetryPolicy(maximum_attempts=1)
        try:
            if which == "start_to_close":
                await workflow.execute_activity(slow, 3.0, False, start_to_close_timeout=0.5, retry_policy=once)
            elif which == "schedule_to_close":
                await workflow.execute_activity(slow, 3.0, False, schedule_to_close_timeout=0.5)
            elif which == "heartbeat_missed":
                await workflow.execute_activity(slow, 3.0, False, heartbeat_timeout=0.5, retry_policy=once)
            elif which == "queued":  # 1 s of work under a 1.5 s start-to-close, however long it queued
                await workflow.execute_activity(slow, 1.0, False, start_to_close_timeout=1.5, retry_policy=once)
            elif which == "schedule_to_start":  # nobody serves the queue
                await workflow.execute_activity(slow, 0.1, False, task_queue="unserved",
                                                schedule_to_start_timeout=0.5, start_to_close_timeout=5)
            elif which == "heartbeat_ok_10s":  # the issue 6 scenario: 10 s activities, 2 s heartbeat timeout
                return str(await workflow.execute_activity(slow, 10.0, True, heartbeat_timeout=2.0))
            else:  # heartbeats keep a 2 s activity alive under a 0.6 s heartbeat timeout
                return str(await workflow.execute_activity(slow, 2.0, True, heartbeat_timeout=0.6))
        except ActivityError as err:
            return f"{type(err.__cause__).__name__}: {getattr(err.__cause__, 'type', '')}"
        return "no timeout"


@workflow.defn
class ThreeSteps:
    @workflow.run
    async def run(self, start: int) -> list[int]:
        workflow.logger.info("three steps from %d", start)
        t = timedelta(seconds=60)
        a = await workflow.execute_activity(step, "a", start, start_to_close_timeout=t)
        b = await workflow.execute_activity(step, "b", a, start_to_close_timeout=t)
        c = await workflow.execute_activity(step, "c", b, start_to_close_timeout=t)
        return [a, b, c]


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, n: int) -> int:
        results = await asyncio.gather(*(workflow.execute_activity(async_step, i) for i in range(n)))
        return sum(results)


@workflow.defn
class Retrying:
    @workflow.run
    async def run(self, times: int) -> str:
        policy = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)
        result: str = await workflow.execute_activity(flaky, times, retry_policy=policy)
        return result


@workflow.defn
class Failing:
    @workflow.run
    async def run(self, reason: str) -> str:
        result: str = await workflow.execute_activity(fail_hard, reason)
        return result


@workflow.defn
class Approval:
    """Waits for an `approve` signal, with a durable timer on the way."""

    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.query
    def state(self) -> dict[str, object]:
        return {"approved_by": self.approved_by}

    @workflow.run
    async def run(self, pause_s: float) -> str:
        started = workflow.now()
        await asyncio.sleep(pause_s)
        slept = (workflow.now() - started).total_seconds()
        await workflow.wait_condition(lambda: self.approved_by is not None)
        return f"approved by {self.approved_by} after sleeping {slept >= pause_s}"


@workflow.defn
class Child:
    """One activity: n -> n + 1; or waits for a `release` signal first when asked to."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self, n: int, wait: bool = False) -> int:
        if wait:
            await workflow.wait_condition(lambda: self.released)
        if n < 0:
            raise ApplicationError(f"child {workflow.info().workflow_id} refuses {n}", non_retryable=True)
        result: int = await workflow.execute_activity(step, "child", n, start_to_close_timeout=60)
        return result


@workflow.defn
class Parent:
    """Fans out `count` children (ids <parent id>-child-<i>), sums their results; a failed child
    surfaces as ChildWorkflowError, reported in the result."""

    @workflow.run
    async def run(self, count: int, wait: bool = False, policy: str = "terminate",
                  release: bool = True) -> dict[str, object]:
        me = workflow.info().workflow_id
        handles = [workflow.start_child_workflow(Child.run, i if i != 13 or count != 14 else -1, wait,
                                                 id=f"{me}-child-{i}", parent_close_policy=policy)
                   for i in range(count)]
        if wait and release:
            for h in handles:
                h.signal("release")
        results: list[object] = []
        for h in handles:
            try:
                results.append(await h.result())
            except ChildWorkflowError as exc:
                results.append(f"{exc.status}: {exc.__cause__}")
        return {"results": results}


@workflow.defn
class Looper:
    """One iteration per `bump` signal; continues as new every `every` iterations, carrying its
    count, the bumps not yet consumed and every `tag` signal seen, until `total` iterations."""

    def __init__(self) -> None:
        self.pending = 0
        self.tags: list[str] = []

    @workflow.signal
    def bump(self) -> None:
        self.pending += 1

    @workflow.signal
    def tag(self, name: str) -> None:
        self.tags.append(name)

    @workflow.query
    def progress(self) -> dict[str, object]:
        return {"pending": self.pending, "tags": len(self.tags)}

    @workflow.run
    async def run(self, count: int, total: int, every: int, pending: int, tags: list[str]) -> dict[str, object]:
        self.pending += pending
        self.tags = tags + self.tags
        while count < total:
            await workflow.wait_condition(lambda: self.pending > 0)
            self.pending -= 1
            count += 1
            if count % every == 0 and count < total:
                workflow.continue_as_new(count, total, every, self.pending, self.tags)
        return {"count": count, "tags": self.tags, "run": workflow.info().run_id}


@workflow.defn
class LongBeat:
    """One long heartbeating activity: cancel the workflow and the activity learns it at its next beat."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        return str(await workflow.execute_activity(slow, seconds, True, heartbeat_timeout=5.0,
                                                   start_to_close_timeout=seconds + 30))


@workflow.defn
class Ticker:
    """Sleeps `every_s` in a loop until it gets `halt`; returns the history time of every wake-up,
    so a test can see the longest pause the workflow lived through (a gap longer than `every_s`)."""

    def __init__(self) -> None:
        self.halted = False

    @workflow.signal
    def halt(self) -> None:
        self.halted = True

    @workflow.run
    async def run(self, every_s: float) -> list[float]:
        wakes: list[float] = []
        while not self.halted:
            await asyncio.sleep(every_s)
            wakes.append(workflow.time())
        return wakes


@workflow.defn
class Cart:
    """Updates: items are added by update (validated), one priced by an activity; checkout by signal."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.checked_out = False

    @workflow.update
    def add_item(self, sku: str) -> int:
        self.items.append(sku)
        return len(self.items)

    @add_item.validator  # type: ignore[attr-defined]
    def check_item(self, sku: str) -> None:
        if not sku:
            raise ValueError("sku must not be empty")
        if self.checked_out:
            raise ValueError("the cart is checked out")

    @workflow.update
    async def add_priced(self, sku: str) -> int:
        price = await workflow.execute_activity(async_step, 21, start_to_close_timeout=timedelta(seconds=30))
        self.items.append(f"{sku}@{price}")
        return int(price)

    @workflow.update
    def refuse(self, why: str) -> None:
        raise ApplicationError(why, type="Refused")

    @workflow.signal
    def checkout(self) -> None:
        self.checked_out = True

    @workflow.query
    def contents(self) -> list[str]:
        return list(self.items)

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.checked_out)
        return self.items


app = Worker(workflows=[ThreeSteps, FanOut, Retrying, Failing, Approval, Timeouts, Looper, Child, Parent, Cart,
                        LongBeat, Ticker],
             activities=[step, async_step, flaky, fail_hard, slow])
# The same application on a worker that runs one activity at a time: tasks queue in its backlog.
one_at_a_time = Worker(workflows=app.workflows, activities=app.activities, max_concurrent_activities=1)
