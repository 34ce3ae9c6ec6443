"""Group coverage (processor/_engine/coverage.py): when a hole counts, who repairs it, and the
watch's non-blocking polling, against an in-memory admin twin."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, TopicPartition

from processor._engine.coverage import CoverageWatch, GroupView, HoleClock


def _view(owned: dict[str, set[int]], partitions: int = 4, stable: bool = True) -> GroupView:
    return GroupView(stable, partitions, {m: frozenset(ps) for m, ps in owned.items()})


def test_unowned_partitions_are_those_no_member_holds() -> None:
    assert _view({"a": {2, 3}, "b": set()}).unowned() == {0, 1}
    assert _view({"a": {0, 1}, "b": {2, 3}}).unowned() == frozenset()
    assert _view({}).unowned() == {0, 1, 2, 3}


def test_the_repairer_owns_the_fewest_partitions_ties_by_key() -> None:
    assert _view({"a": {2, 3}, "b": set()}).repairer() == "b"
    assert _view({"b": {1}, "a": {2}}).repairer() == "a"
    assert _view({}).repairer() is None


def test_a_hole_counts_once_it_lasted_unchanged_for_the_grace() -> None:
    clock = HoleClock(grace_s=6)
    hole = _view({"a": {2, 3}, "b": set()})
    assert clock.observe(hole, 0) == frozenset()
    assert clock.observe(hole, 5.9) == frozenset()
    assert clock.observe(hole, 6.0) == {0, 1}


def test_anything_that_changes_starts_the_clock_again() -> None:
    clock = HoleClock(grace_s=6)
    clock.observe(_view({"a": {2, 3}, "b": set()}), 0)
    clock.observe(_view({"a": {2, 3}, "b": set()}, stable=False), 3)  # a rebalance under way
    assert clock.observe(_view({"a": {2, 3}, "b": set()}), 7) == frozenset()
    assert clock.observe(_view({"a": {2, 3}, "c": set()}), 14) == frozenset()  # another member
    assert clock.observe(_view({"a": {3}, "c": set()}), 21) == frozenset()  # another hole
    assert clock.observe(None, 22) == frozenset()  # the observation failed
    assert clock.observe(_view({"a": {3}, "c": set()}), 23) == frozenset()
    assert clock.observe(_view({"a": {3}, "c": set()}), 29) == {0, 1, 2}


class _Admin:
    """describe_consumer_groups / describe_topics answering with futures the test resolves."""

    def __init__(self) -> None:
        self.asked: list[tuple[Future[Any], Future[Any]]] = []
        self.group_timeouts: list[Any] = []
        self._group: Future[Any] | None = None

    def poll(self, timeout: float) -> int:  # serves log lines: none here
        return 0

    def describe_consumer_groups(self, groups: list[str], **options: Any) -> dict[str, Future[Any]]:
        self.group_timeouts.append(options.get("request_timeout"))
        self._group = Future()
        return {groups[0]: self._group}

    def describe_topics(self, topics: Any, **_: Any) -> dict[str, Future[Any]]:
        topic_f: Future[Any] = Future()
        assert self._group is not None
        self.asked.append((self._group, topic_f))
        return {topics.topic_names[0]: topic_f}

    def answer(self, owned: dict[str, set[int]], partitions: int = 4,
               state: ConsumerGroupState = ConsumerGroupState.STABLE) -> None:
        group_f, topic_f = self.asked[-1]
        members = [SimpleNamespace(group_instance_id=m, member_id=f"{m}-id",
                                   assignment=SimpleNamespace(topic_partitions=[TopicPartition("t", p) for p in ps]))
                   for m, ps in owned.items()]
        group_f.set_result(SimpleNamespace(state=state, members=members))
        topic_f.set_result(SimpleNamespace(partitions=list(range(partitions))))


def _watch(admin: _Admin, me: str) -> CoverageWatch:
    return CoverageWatch("unused:9092", "g", "t", lambda: me, every_s=1, grace_s=6, admin=admin)


def test_the_watch_asks_once_per_interval_and_never_waits() -> None:
    admin = _Admin()
    watch = _watch(admin, "b")
    assert watch.poll(0) is False and len(admin.asked) == 1
    assert watch.poll(5) is False and len(admin.asked) == 1  # unanswered: no second request, no wait
    admin.answer({"a": {0, 1, 2, 3}, "b": set()})
    assert watch.poll(5.1) is False
    assert watch.poll(5.2) is False and len(admin.asked) == 2  # the interval since the last ask has passed


def test_the_member_owning_least_rejoins_after_the_grace_and_the_other_does_not() -> None:
    for me, expected in (("b", True), ("a", False)):
        admin = _Admin()
        watch = _watch(admin, me)
        results = []
        for t in range(0, 9):
            watch.poll(float(t))  # asks
            admin.answer({"a": {2, 3}, "b": set()})
            results.append(watch.poll(t + 0.5))
        assert any(results) is expected, (me, results)
        if expected:
            assert results.index(True) == 6  # the first observation at 0.5, the grace is 6 s


def test_a_failed_observation_is_not_a_hole() -> None:
    admin = _Admin()
    watch = _watch(admin, "b")
    for t in range(0, 9):
        watch.poll(float(t))
        group_f, topic_f = admin.asked[-1]
        group_f.set_exception(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
        topic_f.set_result(SimpleNamespace(partitions=[0, 1, 2, 3]))
        assert watch.poll(t + 0.5) is False


def test_the_group_request_never_times_out_inside_librdkafka_and_a_late_answer_is_a_failed_observation() -> None:
    """librdkafka 2.16 aborts the process when a coordinator-bound admin request that timed out
    inside it meets the returning coordinator (coverage.py's docstring): the watch asks with the
    largest timeout and gives up on the answer itself."""
    from processor._engine.coverage import ADMIN_TIMEOUT_S, STALE_S

    admin = _Admin()
    watch = _watch(admin, "b")
    watch.poll(0)
    assert admin.group_timeouts == [ADMIN_TIMEOUT_S]
    watch.poll(1)
    admin.answer({"a": {2, 3}, "b": set()})  # a hole, seen at 1.5
    watch.poll(1.5)
    watch.poll(2)  # asks again; this answer comes late
    assert watch.poll(2 + STALE_S) is False and watch.clock._seen is None, "late: the hole clock starts again"
    admin.answer({"a": {2, 3}, "b": set()})
    assert watch.poll(2.5 + STALE_S) is False, "the late answer is not used"
    assert len(admin.asked) == 2 and watch.poll(3 + STALE_S) is False and len(admin.asked) == 3, "asks again"


def test_an_admin_client_with_no_answer_for_long_is_replaced() -> None:
    from processor._engine.coverage import RETIRE_S

    made: list[_Admin] = []

    def fresh() -> _Admin:
        made.append(_Admin())
        return made[-1]

    watch = CoverageWatch("unused:9092", "g", "t", lambda: "b", every_s=1, grace_s=6, admin=None,
                          new_admin=fresh)
    watch.poll(0)
    assert len(made) == 1 and len(made[0].asked) == 1
    watch.poll(RETIRE_S - 1)
    assert len(made) == 1
    watch.poll(RETIRE_S + 1)
    assert len(made) == 2, "a new client"
    watch.poll(RETIRE_S + 2)
    assert len(made[1].asked) == 1 and len(made[0].asked) == 1, "the next ask goes to the new one"
