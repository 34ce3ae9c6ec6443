"""A consumer that stays out of its group is replaced (CI: after a session timeout during a
broker outage, librdkafka never rejoined and the worker polled an empty assignment forever)."""

from __future__ import annotations

import time
from collections.abc import Callable

from worker_twins import TASKS, consumer, task_message

from processor._engine.worker import ActivityWorker
from tests.kafka_twins import fenced


def test_a_consumer_out_of_the_group_past_the_watchdog_is_replaced_and_resubscribed(
        make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(rejoin_watchdog_s=60)
    old = consumer(w)
    w.backlog.append(task_message(0, 5, "sized", 1))
    old.member = None  # session timed out: librdkafka reset the member id
    w._check_membership(100.0)
    w._check_membership(159.0)
    assert consumer(w) is old, "still within the watchdog: librdkafka may yet rejoin by itself"
    w._check_membership(160.5)
    new = consumer(w)
    assert new is not old
    deadline = time.monotonic() + 10
    while not old.closed and time.monotonic() < deadline:  # closed on a side thread
        time.sleep(0.01)
    assert old.closed
    assert new.subscribed == [TASKS]
    assert w._assigned == set() and not w.backlog, "what the lost member held is forgotten, not committed"
    assert old.commits == [] and new.commits == []


def test_a_member_without_partitions_is_left_alone(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(rejoin_watchdog_s=60)
    old = consumer(w)
    w._assigned.clear()  # more workers than partitions: in the group, nothing assigned
    for t in (0.0, 100.0, 1_000.0):
        w._check_membership(t)
    assert consumer(w) is old and not old.closed


def test_a_rejoin_within_the_watchdog_resets_it(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(rejoin_watchdog_s=60)
    old = consumer(w)
    old.member = None
    w._check_membership(0.0)
    old.member = "worker-1b"  # rejoined by itself
    w._check_membership(30.0)
    old.member = None
    w._check_membership(70.0)
    w._check_membership(120.0)
    assert consumer(w) is old, "the out-of-group clock restarts at each loss"


def test_a_consumer_that_failed_for_good_is_replaced_at_once(make_worker: Callable[..., ActivityWorker]) -> None:
    """A fatal consumer error (a static member fenced by its own rejoin after a long outage, seen
    in CI): that consumer serves nothing again, so it is replaced without waiting for a watchdog."""
    w = make_worker(rejoin_watchdog_s=60)
    old = consumer(w)
    w._consumed([task_message(0, 5, "sized", 1), fenced()])  # type: ignore[list-item]
    new = consumer(w)
    assert new is not old and new.subscribed == [TASKS]
    assert not w.backlog and w._running == 0, "the fenced consumer's batch is not taken: it is redelivered"
    w._consumed([task_message(0, 5, "sized", 1)])  # type: ignore[list-item]
    assert consumer(w) is new, "an ordinary batch changes nothing"
