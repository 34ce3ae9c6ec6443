"""processor.testing.WorkflowEnvironment: the processor's engine and runtime with no broker, on a
clock that skips ahead over timers (issue 11). Examples' own workflows, as a user would test them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.orders import APPROVAL_TIMEOUT, Order, OrderWorkflow, Receipt
from examples.orders import app as orders_app
from processor import activity
from processor.exceptions import (
    ApplicationError,
    CommandRejectedError,
    ConfigError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from processor.testing import WorkflowEnvironment
from tests.apps.basic import app as basic_app
from tests.apps.basic import slow
from tests.cart_checks import cart_updates_behave

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BIG = Order("order-1", "SKU-1", 5, "4242-4242-4242-4242")


def test_an_order_nobody_approves_is_released_after_two_days_in_milliseconds() -> None:
    began = time.perf_counter()
    with WorkflowEnvironment(orders_app, start_time=MONDAY) as env:
        env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
        assert env.query("order-1", "state")["status"] == "awaiting approval", "it ran up to its wait"
        with pytest.raises(WorkflowFailureError, match="not approved within 2 days"):
            env.result("order-1")
        # skipped to the timeout; the clock also moved by the real time the two activities took
        assert APPROVAL_TIMEOUT <= env.now() - MONDAY < APPROVAL_TIMEOUT + timedelta(seconds=10)
        assert [i.activity_type for i in env.activity_runs] == ["reserve_stock", "release_stock"]
        assert env.describe("order-1")["status"] == "failed"
    print(f"two days of an OrderWorkflow took {time.perf_counter() - began:.3f} s of wall time")


def test_an_order_approved_after_an_hour_ships_in_child_workflows() -> None:
    with WorkflowEnvironment(orders_app, start_time=MONDAY) as env:
        handle = env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
        env.sleep(timedelta(hours=1))
        assert handle.query("state")["status"] == "awaiting approval"
        handle.signal("approve", "ann")
        receipt = handle.result(result_type=Receipt)
        assert isinstance(receipt, Receipt)
        assert receipt.approved_by == "ann"
        assert receipt.tracking == ["TRK-ORDER-1-1", "TRK-ORDER-1-2", "TRK-ORDER-1-3"]
        assert timedelta(hours=1) <= env.now() - MONDAY < timedelta(hours=1, seconds=10)
        assert env.result("order-1-parcel-2") == "TRK-ORDER-1-2", "each parcel was a workflow of its own"
        types = [e["type"] for e in handle.history()]
        assert types[0] == "WorkflowStarted" and types[-1] == "WorkflowCompleted"
        assert types.count("ChildWorkflowCompleted") == 3
        assert env.dead_letters == []


def test_a_mock_replaces_an_activity_by_name_and_sees_its_info() -> None:
    seen: list[Any] = []

    def declined(order: dict[str, Any]) -> str:
        seen.append((activity.info().activity_type, activity.info().attempt, order["card"]))
        raise ApplicationError("card declined", type="Declined", non_retryable=True)

    with WorkflowEnvironment(orders_app, activity_mocks={"charge_card": declined}) as env:
        env.start_workflow(OrderWorkflow.run, Order("small", "SKU-1", 1, "4242"), id="small")
        with pytest.raises(WorkflowFailureError):
            env.result("small")
        assert seen == [("charge_card", 1, "4242")]
        assert [i.activity_type for i in env.activity_runs] == ["reserve_stock", "charge_card", "release_stock"]


def test_retries_wait_their_backoff_on_the_skipping_clock() -> None:
    with WorkflowEnvironment(basic_app, start_time=MONDAY) as env:
        env.start_workflow("Retrying", 2, id="retry")
        assert env.result("retry") == "ok after 3 attempts"
        assert [i.attempt for i in env.activity_runs] == [1, 2, 3]
        waited = env.now() - MONDAY
        assert timedelta(milliseconds=300) <= waited < timedelta(seconds=5), waited  # 100 ms, then 200 ms


def test_sleep_fires_only_what_falls_due() -> None:
    with WorkflowEnvironment(basic_app, start_time=MONDAY) as env:
        env.start_workflow("Approval", 3600.0, id="appr")
        env.sleep(1800)
        assert [e["type"] for e in env.history("appr")][-1] == "TimerStarted"
        env.sleep(1800)
        assert [e["type"] for e in env.history("appr")][-1] == "TimerFired"
        env.signal("appr", "approve", "ops")
        assert env.result("appr") == "approved by ops after sleeping True"


def test_a_workflow_waiting_for_a_signal_is_reported_not_waited_for() -> None:
    with WorkflowEnvironment(basic_app) as env:
        env.start_workflow("Cart", id="cart")
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="waits for a signal, an update or a cancel"):
            env.result("cart")
        assert time.monotonic() - began < 10, "told at once, not after the timeout"


def test_updates_queries_cancel_and_refusals_behave_as_through_the_client() -> None:
    with WorkflowEnvironment(basic_app) as env:
        cart = cart_updates_behave(env)
        with pytest.raises(WorkflowAlreadyStartedError):
            env.start_workflow("Cart", id="cart", if_exists="fail")
        assert env.start_workflow("Cart", id="cart").outcome == "attached"
        cart.cancel("changed my mind")
        with pytest.raises(WorkflowFailureError, match="canceled"):
            cart.result()
        with pytest.raises(CommandRejectedError):
            env.signal("cart", "checkout")
        with pytest.raises(WorkflowNotFoundError):
            env.signal("nobody", "checkout")


def test_a_start_to_close_timeout_fires_while_the_activity_really_runs() -> None:
    """Time passes during an attempt as much as it really takes: a 3 s activity under a 0.5 s
    start-to-close timeout times out, and heartbeats keep a 3 s one alive under a 2 s heartbeat timeout."""
    with WorkflowEnvironment(basic_app) as env:
        env.start_workflow("Timeouts", "start_to_close", id="late")
        assert env.result("late") == "RemoteApplicationError: StartToCloseTimeout"

    def three_seconds(_seconds: float, heartbeat: bool) -> str:
        return slow(3.0, heartbeat)

    with WorkflowEnvironment(basic_app, activity_mocks={"slow": three_seconds}) as env:
        env.start_workflow("Timeouts", "heartbeat_ok_10s", id="beating")  # heartbeat_timeout=2.0
        assert env.result("beating") == "finished"
        assert env.heartbeats, "the heartbeats were seen"
        assert env.now() - datetime.fromtimestamp(env.history("beating")[0]["time_ms"] / 1000, UTC) \
            >= timedelta(seconds=3), "the clock moved with the attempt"


def test_bad_calls_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="needs the workflows"):
        WorkflowEnvironment()
    with pytest.raises(ConfigError, match="timezone-aware"):
        WorkflowEnvironment(basic_app, start_time=datetime(2026, 1, 1))  # noqa: DTZ001 - the bad call
    with WorkflowEnvironment(workflows=[OrderWorkflow]) as env:
        with pytest.raises(ConfigError, match="activity 'reserve_stock', which this WorkflowEnvironment does not"):
            env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
    env.close()
    with pytest.raises(ConfigError, match="closed"):
        env.signal("order-1", "approve", "ann")
