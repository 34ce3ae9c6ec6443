"""The example app (examples/orders.py, issue 7 item 10) on the real broker, as the README tells
a user to run it: a small order ships one parcel; a large one waits for approval (query shows
it), is approved by signal and ships a child workflow per parcel; a rejected and a declined order
release their stock and fail."""

from __future__ import annotations

import time

import pytest

from processor.client import Client
from processor.exceptions import WorkflowFailureError
from tests.dp_harness import Cluster

APP = "examples.orders:app"
CARD, DECLINED = "4242-4242-4242-4242", "4000-0000-0000-0002"


def _order(wid: str, quantity: int, card: str = CARD) -> dict[str, object]:
    return {"order_id": wid, "sku": "SKU-1", "quantity": quantity, "card": card}


def _wait_status(client: Client, wid: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        state = client.query(wid, "state", timeout=60)
        if state["status"] == status or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def test_the_example_orders_app(cluster: Cluster, client: Client) -> None:
    cluster.processor(app=APP)
    cluster.worker(app=APP)
    client.start_workflow("OrderWorkflow", _order("small", 1), id="small")
    client.start_workflow("OrderWorkflow", _order("large", 5), id="large")
    client.start_workflow("OrderWorkflow", _order("rejected", 3), id="rejected")
    client.start_workflow("OrderWorkflow", _order("declined", 2, DECLINED), id="declined")

    small = client.result("small", timeout=120)
    assert small["tracking"] == ["TRK-SMALL-1"] and small["approved_by"] is None

    assert _wait_status(client, "large", "awaiting approval") == {"status": "awaiting approval",
                                                                  "approved_by": None, "tracking": []}
    client.signal("large", "approve", "ann")
    large = client.result("large", timeout=120)
    assert large["tracking"] == ["TRK-LARGE-1", "TRK-LARGE-2", "TRK-LARGE-3"], "5 items: parcels of 2, 2 and 1"
    assert large["approved_by"] == "ann"
    assert client.query("large", "state") == {"status": "shipped", "approved_by": "ann",
                                              "tracking": large["tracking"]}
    for n in (1, 2, 3):  # each parcel was a child workflow of its own
        assert client.result(f"large-parcel-{n}", timeout=60) == f"TRK-LARGE-{n}"

    _wait_status(client, "rejected", "awaiting approval")
    client.signal("rejected", "reject", "over the limit")
    with pytest.raises(WorkflowFailureError, match="was not approved: over the limit"):
        client.result("rejected", timeout=120)
    assert client.query("rejected", "state")["status"] == "cancelled (not approved: over the limit)"

    with pytest.raises(WorkflowFailureError, match="declined"):
        client.result("declined", timeout=120)
    assert client.query("declined", "state")["status"] == "cancelled (card declined)"
