"""The example's two-day approval wait is a durable timer (examples/orders.py): fired, it
releases the stock and fails the order; approved in time, the order goes on."""

from __future__ import annotations

from wf_harness import Sim

from examples.orders import Order, OrderWorkflow


def test_nobody_approves_within_two_days() -> None:
    sim = Sim(OrderWorkflow)
    sim.start(Order("o-1", "SKU-1", 3, "4242-4242-4242-4242"))
    sim.complete(1, "rsv-1")
    (timer,) = sim.commands("TimerStarted")
    assert timer["fire_at_ms"] - sim.now_ms == 2 * 24 * 3600 * 1000
    assert sim.instance.query("state", [])  # answers while waiting
    sim.fire(1)
    assert [s["activity_type"] for s in sim.scheduled()] == ["reserve_stock", "release_stock"]
    sim.complete(2, None)
    failure = sim.closing()["failure"]
    assert failure["type"] == "NotApproved" and "not approved within 2 days" in failure["message"]
    sim.close()


def test_an_approval_in_time_cancels_the_wait_and_charges() -> None:
    sim = Sim(OrderWorkflow)
    sim.start(Order("o-2", "SKU-1", 3, "4242-4242-4242-4242"))
    sim.complete(1, "rsv-1")
    sim.signal("approve", "ann")
    assert [c["type"] for c in sim.history[-2:]] == ["TimerCanceled", "ActivityScheduled"]
    assert sim.scheduled()[-1]["activity_type"] == "charge_card"
    sim.close()
