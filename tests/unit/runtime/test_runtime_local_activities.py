"""workflow.execute_local_activity (issue 11 item 5): run in the processor inside the workflow
task, each attempt recorded (LocalActivityRecorded) and never run again on a replay; retried by
its policy after a durable timer; an attempt bounded by its start_to_close_timeout; a workflow
task that has run local activities for 1 s continues in the next one, the same way on every
replay. Run with DP_ALWAYS_REPLAY=1, so every step replays the run from its first event."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from processor import RetryPolicy, activity, workflow
from processor.exceptions import ActivityError, ApplicationError, ConfigError
from processor.replayer import Replayer
from processor.testing import WorkflowEnvironment

CALLS: list[tuple[str, Any]] = []


@activity.defn
def double(n: int) -> int:
    info = activity.info()
    CALLS.append(("double", (n, info.attempt, info.workflow_id)))
    return 2 * n + int(time.time() * 0)  # the clock is allowed: this is no workflow code


@activity.defn(name="flaky-charge")
def flaky(fail_times: int) -> str:
    attempt = activity.info().attempt
    CALLS.append(("flaky", attempt))
    if attempt <= fail_times:
        raise RuntimeError(f"card network busy (attempt {attempt})")
    return f"charged on attempt {attempt}"


def refuse() -> None:
    raise ApplicationError("card declined", type="Declined", non_retryable=True)


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "late"


async def async_lookup(key: str) -> str:
    await asyncio.sleep(0.01)
    CALLS.append(("lookup", key))
    return key.upper()


@workflow.defn
class Pipeline:
    @workflow.run
    async def run(self, n: int) -> list[Any]:
        out: list[Any] = [await workflow.execute_local_activity(double, i) for i in range(n)]
        out.append(await workflow.execute_local_activity(async_lookup, "sku-1"))
        await asyncio.sleep(60)
        out.append(await workflow.execute_local_activity(double, 100))
        return out


@pytest.fixture(autouse=True)
def replay_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DP_ALWAYS_REPLAY", "1")
    CALLS.clear()


def test_each_attempt_runs_once_and_replays_from_history() -> None:
    with WorkflowEnvironment(workflows=[Pipeline]) as env:
        env.start_workflow(Pipeline, 5, id="p")
        assert env.result("p") == [0, 2, 4, 6, 8, "SKU-1", 200]
        history = env.history("p")
    assert [c for c in CALLS if c[0] == "double"] == [("double", (i, 1, "p")) for i in (0, 1, 2, 3, 4, 100)]
    assert CALLS.count(("lookup", "sku-1")) == 1, "not run again by the replays of later steps"
    recorded = [e for e in history if e["type"] == "LocalActivityRecorded"]
    assert [(e["local_activity_seq"], e["activity_type"], e["attempt"]) for e in recorded] == \
        [(1, "double", 1), (2, "double", 1), (3, "double", 1), (4, "double", 1), (5, "double", 1),
         (6, "async_lookup", 1), (7, "double", 1)]
    assert all(e["failure"] is None and e["duration_ms"] >= 0 for e in recorded)
    assert not any(e["type"] == "ActivityScheduled" for e in history), "no task topic involved"
    CALLS.clear()
    assert Replayer([Pipeline]).replay(history).closed
    assert CALLS == [], "a replay reads the recorded results"


@workflow.defn
class Charging:
    @workflow.run
    async def run(self, fail_times: int, attempts: int) -> str:
        policy = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=attempts)
        try:
            got: str = await workflow.execute_local_activity(flaky, fail_times, retry_policy=policy)
            return got
        except ActivityError as exc:
            return f"gave up: {exc.__cause__}"


def test_a_failed_attempt_is_retried_after_a_durable_timer() -> None:
    with WorkflowEnvironment(workflows=[Charging]) as env:
        env.start_workflow(Charging, 2, 5, id="c")
        assert env.result("c") == "charged on attempt 3"
        history = env.history("c")
        env.start_workflow(Charging, 9, 2, id="c2")
        assert env.result("c2") == "gave up: card network busy (attempt 2)"
    types = [e["type"] for e in history if e["type"] in ("LocalActivityRecorded", "TimerStarted", "TimerFired")]
    assert types == ["LocalActivityRecorded", "TimerStarted", "TimerFired"] * 2 + ["LocalActivityRecorded"]
    durations = [e["duration_ms"] for e in history if e["type"] == "TimerStarted"]
    assert durations == [2_000, 4_000], "the policy's backoff"
    failures = [e["failure"]["message"] for e in history if e["type"] == "LocalActivityRecorded" and e["failure"]]
    assert failures == ["card network busy (attempt 1)", "card network busy (attempt 2)"]
    assert [c for c in CALLS if c[0] == "flaky"][:3] == [("flaky", 1), ("flaky", 2), ("flaky", 3)]


@workflow.defn
class Strict:
    @workflow.run
    async def run(self, which: str) -> str:
        try:
            if which == "refuse":
                await workflow.execute_local_activity(refuse)
            else:
                await workflow.execute_local_activity(slow, 0.5, start_to_close_timeout=0.1,
                                                      retry_policy=RetryPolicy(maximum_attempts=1))
        except ActivityError as exc:
            return f"{exc} | {type(exc.__cause__).__name__}: {exc.__cause__}"
        return "no error"


def test_a_non_retryable_error_and_a_timeout_end_it() -> None:
    with WorkflowEnvironment(workflows=[Strict]) as env:
        env.start_workflow(Strict, "refuse", id="r")
        assert env.result("r") == ("local activity refuse failed on attempt 1: card declined | "
                                   "RemoteApplicationError: card declined")
        env.start_workflow(Strict, "slow", id="s")
        assert env.result("s").endswith("RemoteApplicationError: local activity 'slow' attempt 1 exceeded its "
                                        "start_to_close_timeout of 0.1s")


@workflow.defn
class Busy:
    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_local_activity(slow, 0.06) == "late"
            del i
        return total


def test_a_long_run_of_local_activities_continues_in_the_next_workflow_task() -> None:
    with WorkflowEnvironment(workflows=[Busy]) as env:
        env.start_workflow(Busy, 30, id="b")
        assert env.result("b") == 30
        history = env.history("b")
    kinds = [e["type"] for e in history if e["type"] in ("LocalActivityRecorded", "TimerStarted")]
    assert kinds.count("LocalActivityRecorded") == 30
    boundaries = [i for i, k in enumerate(kinds) if k == "TimerStarted"]
    assert boundaries, "30 x 60 ms is more than one task's second"
    cut = history.index(next(e for e in history if e["type"] == "TimerStarted"))
    ran = [e["duration_ms"] for e in history[:cut] if e["type"] == "LocalActivityRecorded"]
    # The rule, whatever the machine's speed: the task stopped at the first attempt that took it
    # to 1 s of local activities, not before and not after.
    assert sum(ran) >= 1_000 and sum(ran[:-1]) < 1_000, ran
    assert Replayer([Busy]).replay(history).closed, "the boundaries replay: decided from recorded durations"


@workflow.defn
class Misused:
    @workflow.run
    async def run(self, how: str) -> str:
        try:
            if how == "name":
                await workflow.execute_local_activity("double", 1)  # type: ignore[arg-type]
            else:
                await workflow.execute_local_activity(double, 1, start_to_close_timeout=timedelta(seconds=30))
        except ConfigError as exc:
            return str(exc)
        return "accepted"


def test_misuse_is_a_clear_error() -> None:
    with WorkflowEnvironment(workflows=[Misused]) as env:
        env.start_workflow(Misused, "name", id="m1")
        assert env.result("m1").startswith("execute_local_activity runs a function here: pass the function")
        env.start_workflow(Misused, "timeout", id="m2")
        assert env.result("m2").startswith("a local activity's start_to_close_timeout is at most 5 s")
