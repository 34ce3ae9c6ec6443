"""processor.testing.KafkaWorkflowEnvironment on the real broker (issue 11 item 1): the engine and
a worker on threads, on a clock that skips only when nothing else can happen -- timers in order,
retry backoffs, schedules -- never while an activity really runs; mocks by name; and the
`processes=True` mode that runs `processor run` itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.orders import Order, OrderWorkflow, Receipt
from examples.orders import app as orders_app
from processor import Worker, activity, workflow
from processor.exceptions import ApplicationError, ConfigError, WorkflowFailureError
from processor.testing import KafkaWorkflowEnvironment
from processor.workflow import RetryPolicy
from tests.apps.basic import app as basic_app
from tests.apps.basic import flaky, slow
from tests.cart_checks import cart_updates_behave

pytestmark = pytest.mark.integration

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_timers_fire_in_order_as_sleep_skips_and_a_signal_lands_between(kafka_bootstrap: str) -> None:
    with KafkaWorkflowEnvironment(basic_app, kafka_bootstrap, start_time=MONDAY) as env:
        began = time.perf_counter()
        env.start_workflow("Approval", 3600.0, id="appr")
        assert MONDAY <= env.now() < MONDAY + timedelta(minutes=2), "the clock starts at start_time"
        env.sleep(1800)
        assert [e["type"] for e in env.history("appr")][-1] == "TimerStarted", "half way: not fired"
        env.sleep(1800)
        assert [e["type"] for e in env.history("appr")][-1] == "TimerFired"
        env.signal("appr", "approve", "ops")
        assert env.result("appr") == "approved by ops after sleeping True"
        assert timedelta(hours=1) <= env.now() - MONDAY < timedelta(hours=1, minutes=2)
        print(f"an hour of sleeps in {time.perf_counter() - began:.3f} s of wall time")


def test_retry_backoffs_are_skipped_and_a_mock_replaces_an_activity_by_name(kafka_bootstrap: str) -> None:
    seen: list[Any] = []

    def declined(order: dict[str, Any]) -> str:
        seen.append((activity.info().activity_type, activity.info().attempt, order["card"]))
        raise ApplicationError("card declined", type="Declined", non_retryable=True)

    with KafkaWorkflowEnvironment(orders_app, kafka_bootstrap, activity_mocks={"charge_card": declined}) as env:
        env.start_workflow(OrderWorkflow.run, Order("small", "SKU-1", 1, "4242"), id="small")
        with pytest.raises(WorkflowFailureError, match="card declined"):
            env.result("small")
        assert seen == [("charge_card", 1, "4242")], "the mock ran, once, with the activity's info"
    with KafkaWorkflowEnvironment(basic_app, kafka_bootstrap, start_time=MONDAY) as env:
        env.start_workflow("Retrying", 2, id="retry")
        assert env.result("retry") == "ok after 3 attempts"
        types = [e["type"] for e in env.history("retry")]
        assert types.count("ActivityAttemptFailed") == 2 and "ActivityCompleted" in types, types
        assert env.now() - MONDAY < timedelta(minutes=2), "backoffs of 100 and 200 ms, skipped or not"


@workflow.defn
class LongAttempt:
    """One 3 s attempt under an hour's start-to-close timeout, no retries: a skip while it runs
    would jump to that timeout and fail the workflow."""

    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity(slow, 3.0, True, start_to_close_timeout=3600,
                                                   retry_policy=RetryPolicy(maximum_attempts=1)))


def test_time_does_not_skip_while_an_activity_really_runs(kafka_bootstrap: str) -> None:
    with KafkaWorkflowEnvironment(Worker(workflows=[LongAttempt], activities=[slow]), kafka_bootstrap) as env:
        start = env.now()
        env.start_workflow(LongAttempt.run, id="long")
        assert env.result("long") == "finished"
        assert env.now() - start < timedelta(minutes=5), "the clock only moved with the wall"
    with KafkaWorkflowEnvironment(basic_app, kafka_bootstrap) as env:  # a real timeout still fires
        env.start_workflow("Timeouts", "start_to_close", id="late")
        assert env.result("late") == "RemoteApplicationError: StartToCloseTimeout"


@workflow.defn
class HourlyRetry:
    """One activity failing its first attempt, retried an hour later, under a day's schedule-to-close."""

    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity(
            flaky, 1, start_to_close_timeout=60, schedule_to_close_timeout=timedelta(days=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(hours=1))))


def test_a_retry_backoff_is_skipped_and_a_result_never_skips_past_its_close(kafka_bootstrap: str) -> None:
    """The schedule-to-close timer stands through the backoff, yet no attempt is out then: the
    hour is skipped. Another workflow's day-long timer is not: result() stops skipping once the
    workflow it waits for has closed."""
    app = Worker(workflows=[HourlyRetry, *basic_app.workflows], activities=basic_app.activities)
    with KafkaWorkflowEnvironment(app, kafka_bootstrap, start_time=MONDAY) as env:
        env.start_workflow("Approval", 86_400.0, id="a-day")
        env.start_workflow(HourlyRetry.run, id="hourly")
        assert env.result("hourly", timeout=60) == "ok after 2 attempts"
        waited = env.now() - MONDAY
        assert timedelta(hours=1) <= waited < timedelta(hours=1, minutes=5), waited
        assert [e["type"] for e in env.history("a-day")][-1] == "TimerStarted", "the day-long timer did not fire"


def test_updates_and_a_schedule_on_the_skipping_clock(kafka_bootstrap: str) -> None:
    with KafkaWorkflowEnvironment(basic_app, kafka_bootstrap, start_time=MONDAY) as env:
        cart_updates_behave(env)

        env.create_schedule("hourly", "ThreeSteps", 1, every=timedelta(hours=1))
        env.sleep(timedelta(hours=3, minutes=30))
        described = env.get_schedule_handle("hourly").describe()
        assert described["fired"] == 3, described
        ids = [f"hourly-{(MONDAY.replace(minute=0) + timedelta(hours=h)):%Y-%m-%dT%H:%M:%SZ}" for h in (1, 2, 3)]
        results = [env.result(i) for i in ids]  # each firing ran, named by its time
        assert len(results[0]) == 3 and results == [results[0]] * 3, results


def test_processes_mode_runs_processor_run_and_refuses_what_it_cannot_do(kafka_bootstrap: str) -> None:
    with pytest.raises(ConfigError, match="need the in-process environment"):
        KafkaWorkflowEnvironment(orders_app, kafka_bootstrap, processes=True, activity_mocks={"ship": print})
    with KafkaWorkflowEnvironment(orders_app, kafka_bootstrap, processes=True) as env:
        assert not env.time_skipping
        order = env.start_workflow(OrderWorkflow.run, Order("o-9", "SKU-1", 5, "4242"), id="o-9")
        order.signal("approve", "ann")
        assert order.result(result_type=Receipt).approved_by == "ann"
