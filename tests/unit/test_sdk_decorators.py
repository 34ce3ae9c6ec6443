from __future__ import annotations

import threading
from contextvars import copy_context
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processor import activity, workflow
from processor.activity import ActivityContext, ActivityDefinition, ActivityInfo
from processor.exceptions import ConfigError
from processor.workflow import RetryPolicy, WorkflowDefinition


@workflow.defn
class Plain:
    @workflow.signal
    def poke(self) -> None: ...

    @workflow.signal(name="renamed")
    async def other(self, x: int) -> None: ...

    @workflow.run
    async def go(self, a: int, b: str) -> None: ...


def test_defn_builds_a_definition_without_registering_anything() -> None:
    d = WorkflowDefinition.of(Plain)
    assert (d.name, d.cls, d.run_fn) == ("Plain", Plain, Plain.go)
    assert dict(d.signals) == {"poke": Plain.poke, "renamed": Plain.other}
    assert d.run_param_hints == (int, str)

    @workflow.defn(name="custom")
    class Named(Plain):
        pass

    assert WorkflowDefinition.of(Named).name == "custom"
    assert WorkflowDefinition.of(Plain).name == "Plain"  # the subclass did not touch its base


def expect_config_error(match: str) -> Any:
    return pytest.raises(ConfigError, match=match)


def test_workflow_decorator_validation_messages() -> None:
    with expect_config_error("make it `async def`"):

        @workflow.run
        def run(self: Any) -> None: ...

    with expect_config_error("decorates a class"):
        workflow.defn(lambda: None)  # type: ignore[type-var]

    with expect_config_error(r"no @workflow.run method: add `@workflow.run async def run"):

        @workflow.defn
        class NoRun:
            pass

    with expect_config_error(r"several @workflow.run methods \(a, b\)"):

        @workflow.defn
        class TwoRuns:
            @workflow.run
            async def a(self) -> None: ...

            @workflow.run
            async def b(self) -> None: ...

    with expect_config_error(r"two handlers for signal 'x' \(s1 and s2\).*@workflow.signal\(name=...\)"):

        @workflow.defn
        class DupSignals:
            @workflow.signal(name="x")
            def s1(self) -> None: ...

            @workflow.signal(name="x")
            def s2(self) -> None: ...

            @workflow.run
            async def run(self) -> None: ...

    with expect_config_error("__init__ requires order"):

        @workflow.defn
        class NeedsArgs:
            def __init__(self, order: str) -> None: ...

            @workflow.run
            async def run(self) -> None: ...

    with expect_config_error("non-empty string"):
        workflow.defn(name="")
    with expect_config_error("non-empty string"):
        activity.defn(name="")
    with expect_config_error("@workflow.signal decorates a method"):
        workflow.signal(staticmethod(lambda: None))  # type: ignore[call-overload]
    with expect_config_error("is not a workflow: decorate the class with `@workflow.defn`"):
        WorkflowDefinition.of(int)


def test_subclass_without_decorator_is_not_a_workflow() -> None:
    class Sub(Plain):
        pass

    with expect_config_error("Sub is not a workflow"):
        WorkflowDefinition.of(Sub)


def test_activity_defn() -> None:
    @activity.defn
    async def fetch(url: str) -> bytes:
        return b""

    @activity.defn(name="send-mail")
    def send(to: str) -> None: ...

    assert ActivityDefinition.of(fetch) == ActivityDefinition("fetch", fetch, True)
    assert fetch.__name__ == "fetch"  # returned unchanged
    d = ActivityDefinition.of(send)
    assert (d.name, d.is_async, d.return_hint, d.param_hints) == ("send-mail", False, type(None), (str,))
    assert activity.defn(name="sq")(lambda x: x).__name__ == "<lambda>"


def test_activity_decorator_validation_messages() -> None:
    with expect_config_error("not the class"):
        activity.defn(type("K", (), {}))
    with expect_config_error("no usable name"):
        activity.defn(lambda: None)
    with expect_config_error("generator"):

        @activity.defn
        def gen() -> Any:
            yield 1

    with expect_config_error("decorates a function"):
        activity.defn(42)  # type: ignore[type-var]
    with expect_config_error(r"is not an activity: decorate it with `@activity.defn`"):
        ActivityDefinition.of(print)


def make_info(**overrides: Any) -> ActivityInfo:
    fields: dict[str, Any] = {
        "workflow_id": "wf-1",
        "workflow_type": "Checkout",
        "activity_seq": 3,
        "activity_type": "ship",
        "attempt": 2,
        "task_queue": "default",
        "scheduled_time": datetime(2024, 1, 1, tzinfo=UTC),
    }
    return ActivityInfo(**{**fields, **overrides})


def test_activity_context_info_heartbeat_and_threads() -> None:
    assert activity.in_activity() is False
    with expect_config_error(r"activity.info\(\) was called outside an activity"):
        activity.info()
    beats: list[tuple[Any, ...]] = []
    token = activity._set_context(ActivityContext(make_info(), beats.append))
    try:
        assert activity.in_activity()
        assert activity.info().idempotency_key == "wf-1/3"
        activity.heartbeat(50, "percent")
        seen: list[str] = []
        # The worker runs sync activities in threads under a copy of the context.
        ctx = copy_context()
        thread = threading.Thread(target=ctx.run, args=(lambda: seen.append(activity.info().activity_type),))
        thread.start()
        thread.join()
        assert seen == ["ship"]
    finally:
        activity._reset_context(token)
    assert beats == [(50, "percent")]
    assert activity.in_activity() is False
    assert make_info(idempotency_key="given").idempotency_key == "given"


def test_retry_policy_record_and_validation() -> None:
    assert RetryPolicy(
        initial_interval=timedelta(milliseconds=250), maximum_attempts=5, non_retryable_error_types=("Fatal",)
    ).to_record() == {
        "initial_interval_ms": 250,
        "backoff_coefficient": 2.0,
        "maximum_interval_ms": 25_000,
        "maximum_attempts": 5,
        "non_retryable_error_types": ["Fatal"],
    }
    assert RetryPolicy(maximum_interval=timedelta(seconds=7)).to_record()["maximum_interval_ms"] == 7000
    with expect_config_error("backoff_coefficient"):
        RetryPolicy(backoff_coefficient=0.5)
    with expect_config_error("not one string"):
        RetryPolicy(non_retryable_error_types="Fatal")  # type: ignore[arg-type]


def test_retry_policy_takes_seconds_or_timedelta() -> None:
    from datetime import timedelta

    from processor.exceptions import ConfigError
    from processor.workflow import RetryPolicy

    assert RetryPolicy(initial_interval=0.25).to_record()  # type: ignore[arg-type]["initial_interval_ms"] == 250
    policy = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=5)  # type: ignore[arg-type]
    assert policy.to_record()["maximum_interval_ms"] == 5000
    with pytest.raises(ConfigError, match="initial_interval is a timedelta or seconds; got str"):
        RetryPolicy(initial_interval="1s")  # type: ignore[arg-type]
