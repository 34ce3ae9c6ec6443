"""The client's completion reader follows a continue-as-new chain of any length (a workflow that
loops for months continues as new thousands of times) without recursing."""

from __future__ import annotations

import threading
from collections import OrderedDict

from processor._watcher import Completion, Watcher


def _watcher_without_kafka() -> Watcher:
    """The reader's bookkeeping only: what on_result/cancel use (the Kafka thread is not started)."""
    w = Watcher.__new__(Watcher)
    w.lock = threading.Lock()
    w.results, w.latest, w.callbacks = OrderedDict(), OrderedDict(), {}
    w.pinned, w.kept = set(), {}
    ready = threading.Event()
    ready.set()
    w.partitions, w._watched, w._add = 1, {0: ready}, []  # its one partition already watched
    return w


def _chain(w: Watcher, wid: str, runs: int) -> None:
    for i in range(runs):
        closed = ("WorkflowContinuedAsNew", {"run_id": f"r{i}", "new_run_id": f"r{i + 1}"})
        w._keep(wid, f"r{i}", closed)


def test_a_chain_of_5000_closed_runs_is_followed_to_the_last() -> None:
    w = _watcher_without_kafka()
    _chain(w, "loop", 5_000)
    w._keep("loop", "r5000", ("WorkflowCompleted", {"run_id": "r5000"}))
    got: list[Completion] = []
    w.on_result("loop", "r0", got.append)
    assert got == [("WorkflowCompleted", {"run_id": "r5000"})]


def test_a_waiter_on_a_chain_still_running_waits_on_its_newest_run_and_can_give_up() -> None:
    w = _watcher_without_kafka()
    _chain(w, "loop", 3_000)
    got: list[Completion] = []
    registered = w.on_result("loop", "r0", got.append)
    assert got == [] and list(w.callbacks) == [("loop", "r3000")]
    w.cancel("loop", "r0", registered)  # it gave up: forgotten where it waits now
    assert w.callbacks == {}


def test_the_cache_of_completions_read_is_bounded() -> None:
    from processor._watcher import CACHE_MAX

    w = _watcher_without_kafka()
    for i in range(CACHE_MAX + 500):
        w._keep(f"w{i}", "r", ("WorkflowCompleted", {"run_id": "r"}))
    assert len(w.results) == CACHE_MAX and len(w.latest) == CACHE_MAX
    assert ("w0", "r") not in w.results and (f"w{CACHE_MAX + 499}", "r") in w.results, "the oldest go first"


def test_the_completion_of_a_run_the_client_started_is_never_evicted() -> None:
    from processor._watcher import CACHE_MAX

    w = _watcher_without_kafka()
    w.pin("mine")
    w._keep("mine", "r1", ("WorkflowCompleted", {"run_id": "r1"}))
    for i in range(CACHE_MAX + 10):
        w._keep(f"other-{i}", "r", ("WorkflowCompleted", {"run_id": "r"}))
    got: list[Completion] = []
    w.on_result("mine", "r1", got.append)
    assert got == [("WorkflowCompleted", {"run_id": "r1"})], "still there after 10,010 others"
    w.unpin("mine")
    assert w.kept == {}
