"""examples/orders.py tested as a user tests it (issue 11): the same tests on the in-memory,
time-skipping WorkflowEnvironment and, unchanged, on a real broker (KafkaWorkflowEnvironment:
the engine on threads, its clock skipping too), through the plugin's `workflow_env` fixture."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from examples.orders import APPROVAL_TIMEOUT, Order, OrderWorkflow, Receipt
from examples.orders import app as orders_app
from processor.exceptions import WorkflowFailureError
from processor.testing import WorkflowEnvironment

BIG = Order("order-1", "SKU-1", 5, "4242-4242-4242-4242")
DECLINED = Order("order-2", "SKU-1", 1, "4000-0000-0000-0002")


def test_an_approved_order_ships_a_parcel_workflow_per_two_items(workflow_env: Any, dp_env: str) -> None:
    began = time.perf_counter()
    order = workflow_env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
    order.signal("approve", "ann")
    receipt = order.result(result_type=Receipt)
    assert receipt.approved_by == "ann"
    assert receipt.tracking == ["TRK-ORDER-1-1", "TRK-ORDER-1-2", "TRK-ORDER-1-3"]
    assert workflow_env.result("order-1-parcel-3") == "TRK-ORDER-1-3"
    assert workflow_env.describe("order-1")["status"] == "completed"
    print(f"{dp_env}: an approved order in {time.perf_counter() - began:.3f} s")


def test_a_declined_card_releases_the_stock_and_fails_the_order(workflow_env: Any) -> None:
    workflow_env.start_workflow(OrderWorkflow.run, DECLINED, id="order-2")
    with pytest.raises(WorkflowFailureError, match="declined"):
        workflow_env.result("order-2")
    types = [e["type"] for e in workflow_env.history("order-2")]
    assert types.count("ActivityCompleted") == 2, "reserve, then release after the declined charge"
    assert types[-1] == "WorkflowFailed"


def test_nobody_approves_for_two_days(workflow_env: Any, dp_env: str, replay_histories: Any, tmp_path: Any) -> None:
    """Two days of waiting, then the stock is released: in memory and on the broker alike, the
    clock skips the wait. The run's history is then written out and replayed the way a CI job
    replays production histories."""
    from processor.replayer import history_to_json

    began = time.perf_counter()
    start = workflow_env.now()
    workflow_env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
    assert workflow_env.query("order-1", "state")["status"] == "awaiting approval"
    with pytest.raises(WorkflowFailureError, match="not approved within 2 days"):
        workflow_env.result("order-1")
    waited = workflow_env.now() - start
    assert APPROVAL_TIMEOUT <= waited < APPROVAL_TIMEOUT + timedelta(seconds=60)
    types = [e["type"] for e in workflow_env.history("order-1")]
    assert types.count("ActivityCompleted") == 2, "reserve, then release after the timeout"
    (tmp_path / "order-1.jsonl").write_text(history_to_json(workflow_env.history("order-1")))
    print(f"{dp_env}: two days of approval wait in {time.perf_counter() - began:.3f} s of wall time")
    assert replay_histories(tmp_path) == 1


def test_an_in_memory_run_starts_at_the_given_time() -> None:
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    with WorkflowEnvironment(orders_app, start_time=start) as env:
        env.start_workflow(OrderWorkflow.run, BIG, id="order-1")
        with pytest.raises(WorkflowFailureError, match="not approved within 2 days"):
            env.result("order-1")
        assert start + APPROVAL_TIMEOUT <= env.now() < start + APPROVAL_TIMEOUT + timedelta(seconds=10)
