"""The clock port and loop calls (processor/_engine/clock.py), the skipping clock of
processor.testing, and the timer queries its time skipping asks the engine (store.py, timers.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from processor._engine.clock import LoopCalls, wall_ms
from processor._engine.store import PartitionStore
from processor.testing._skipping import SkippingClock


def test_a_call_runs_on_the_loop_thread_and_its_answer_or_error_comes_back() -> None:
    calls = LoopCalls()
    ran_on: list[str] = []
    ok = calls.submit(lambda: ran_on.append(threading.current_thread().name) or 42)
    bad = calls.submit(lambda: 1 / 0)
    assert not ok.done(), "nothing runs before the loop's turn"
    loop = threading.Thread(target=calls.run_pending, name="the-loop")
    loop.start()
    loop.join()
    assert ok.result(1) == 42 and ran_on == ["the-loop"]
    with pytest.raises(ZeroDivisionError):
        bad.result(1)
    late = calls.submit(lambda: 1)
    calls.cancel_pending()
    with pytest.raises(RuntimeError, match="stopped before it ran"):
        late.result(1)


def test_the_skipping_clock_starts_where_asked_and_only_moves_ahead() -> None:
    clock = SkippingClock(1_000_000)
    assert 1_000_000 <= clock() < 1_000_000 + 5_000
    clock.advance_to(2_000_000)
    assert 2_000_000 <= clock() < 2_000_000 + 5_000
    clock.advance_to(1_500_000)
    assert clock() >= 2_000_000, "never back"
    assert abs(SkippingClock()() - wall_ms()) < 5_000


def test_timer_queries_of_time_skipping(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    try:
        store.set_timer("closed", "p0", 100)   # retention of a closed workflow: nobody waits on it
        store.set_timer("sleeper", "u1", 500)  # a workflow sleep
        store.set_timer("worker", "r3", 300)   # an activity's retry backoff
        store.flush()
        assert store.next_due() == 100
        assert store.next_due_except(frozenset("p")) == 300
        assert store.next_due_except(frozenset("pru")) is None
        assert sorted(store.timer_keys_all()) == [("closed", "p0"), ("sleeper", "u1"), ("worker", "r3")]
    finally:
        store.close()


def test_an_activity_is_out_while_an_attempt_timer_stands_but_not_in_its_retry_backoff(tmp_path: Path) -> None:
    from processor.testing import WorkflowEnvironment
    from tests.apps.basic import app

    with WorkflowEnvironment(app, state_dir=tmp_path) as env:
        engine, store = env.engine, env.engine.stores[0]
        assert not engine.activity_outstanding()
        store.set_timer("w", "c3", 10_000)  # schedule-to-close of activity 3 ...
        store.flush()
        assert engine.activity_outstanding(), "... an attempt of it is out"
        store.set_timer("w", "r3", 5_000)  # ... waiting for its retry: none is
        store.flush()
        assert not engine.activity_outstanding()
        store.set_timer("w", "s4", 7_000)  # another activity's attempt, running
        store.flush()
        assert engine.activity_outstanding()
