"""Group coverage: every partition of a group's topic is owned by some member.

Why it needs watching: processors and workers are static group members with cooperative
rebalancing. A rebalance runs in two phases: in the first, a member gives up the partitions that
move and then rejoins; only the second hands them to their new owner. A member killed between
the two and restarted within session.timeout.ms rejoins a Stable group as the same static member,
and Kafka hands it its last assignment without a rebalance (the coordinator's
updateStaticMemberThenRebalanceOrCompleteJoin): the partitions it had given up stay assigned to
nobody until something else rebalances the group. Found in CI (a workflow waited 240 s on two such
partitions), reproduced by tests/chaos/test_chaos_static_rejoin.py.

The rule (pure, unit-tested): a hole that lasts `grace_s` unchanged while the group is Stable is
repaired by one member -- the one owning the fewest partitions, so the repair moves least -- which
leaves and rejoins the group, and that rebalance assigns every partition. The mechanism
(`CoverageWatch`) describes the group and the topic with non-blocking admin requests, at most
one pair in flight, so the loop that polls it never waits on the network.

The group is described with a request timeout librdkafka never reaches (ADMIN_TIMEOUT_S). A
coordinator-bound admin request (DescribeConsumerGroups) that times out inside librdkafka 2.16
while the coordinator is away leaves a request behind that frees its enq_once when the
coordinator returns and then uses it: the process aborts on `rd_kafka_enq_once_del_source_return:
Assertion eonce->refcnt > 0` (librdkafka issues #4605 and #3663, fix proposed in PR #5397, not
released). Our workers aborted so under load while a broker or coordinator was killed. So the
watch gives up on an answer itself (STALE_S: the observation failed, the hole clock starts
again) and, if none comes for RETIRE_S, replaces the admin client and drops the old one on a
thread of its own -- destroying a client with a coordinator request in flight is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from processor._kafka.config import client_config

log = logging.getLogger("processor.coverage")

CHECK_EVERY_S = 1.0
# Longer than the members' topic.metadata.refresh.interval.ms (5 s, settings.py): partitions just
# added to the topic are unowned until the group leader's next refresh rebalances the group by
# itself, and that is not a hole to repair.
HOLE_GRACE_S = 6.0
ADMIN_TIMEOUT_S = 3600.0  # the largest request_timeout librdkafka takes: it must never fire (above)
STALE_S = 10.0  # an answer this late counts as a failed observation
RETIRE_S = 300.0  # no answer this long: a new admin client, the old one dropped on the side


@dataclass(frozen=True)
class GroupView:
    """One observation: whether the group is Stable, the topic's partition count, and the
    partitions each member owns (keyed by group.instance.id, or member id for a dynamic member)."""
    stable: bool
    partitions: int
    owned: Mapping[str, frozenset[int]]

    def unowned(self) -> frozenset[int]:
        held = frozenset().union(*self.owned.values()) if self.owned else frozenset()
        return frozenset(range(self.partitions)) - held

    def repairer(self) -> str | None:
        """The member that rejoins to repair a hole: the one owning the fewest partitions
        (ties: the smallest key), so the rebalance it causes moves as little as possible."""
        if not self.owned:
            return None
        return min(self.owned, key=lambda member: (len(self.owned[member]), member))


class HoleClock:
    """When a hole has lasted: the same unowned partitions among the same members, in a Stable
    group, since the first observation of it. Anything else (a rebalance under way, a member
    come or gone, no hole) starts the clock again."""

    def __init__(self, grace_s: float = HOLE_GRACE_S) -> None:
        self.grace_s = grace_s
        self._seen: tuple[frozenset[int], frozenset[str]] | None = None
        self._since = 0.0

    def observe(self, view: GroupView | None, now: float) -> frozenset[int]:
        """The hole if it has lasted `grace_s`, else empty. `view` None: the observation failed."""
        if view is None or not view.stable or not (hole := view.unowned()):
            self._seen = None
            return frozenset()
        key = (hole, frozenset(view.owned))
        if key != self._seen:
            self._seen, self._since = key, now
            return frozenset()
        return hole if now - self._since >= self.grace_s else frozenset()

    def reset(self) -> None:
        self._seen = None


class CoverageWatch:
    """Polled by a group member's loop: `poll(now)` is True when this member should rejoin."""

    def __init__(self, bootstrap: str, group: str, topic: str, me: Callable[[], str], *,
                 every_s: float = CHECK_EVERY_S, grace_s: float = HOLE_GRACE_S,
                 admin: Any = None, new_admin: Callable[[], Any] | None = None) -> None:
        """`me`: this member's key (its group.instance.id, or its member id if it has none).
        `admin` / `new_admin`: an admin client's twin, or what makes them (unit tests); else an
        AdminClient is made, and remade after RETIRE_S without an answer."""
        self.group, self.topic, self._me = group, topic, me
        if new_admin is None:
            new_admin = (lambda: admin) if admin is not None else (lambda: AdminClient(
                client_config("admin", bootstrap, "coverage", {"log_level": 4})))
        self._new_admin = new_admin
        self._admin = self._new_admin()
        self.every_s = every_s
        self.clock = HoleClock(grace_s)
        self._next = 0.0
        self._pending: tuple[Future[Any], Future[Any]] | None = None
        self._sent = 0.0
        self._stale = False
        self._last_view: GroupView | None = None

    def poll(self, now: float) -> bool:
        self._admin.poll(0)  # serves librdkafka's log lines (a `logger`: processor/_kafka/config.py)
        if self._pending is None:
            if now >= self._next:
                self._next, self._sent, self._stale = now + self.every_s, now, False
                self._pending = (
                    self._admin.describe_consumer_groups([self.group], request_timeout=ADMIN_TIMEOUT_S)[self.group],
                    self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=10)[self.topic])
            return False
        group_f, topic_f = self._pending
        if not (group_f.done() and topic_f.done()):
            self._waiting(now)
            return False
        self._pending = None
        if self._stale:
            return False  # counted as failed already; the next pair is sent at the next turn
        hole = self.clock.observe(self._view(group_f, topic_f), now)
        if not hole:
            return False
        view = self._last_view
        if view is None or view.repairer() != self._me():
            return False
        self.clock.reset()
        log.warning("partitions %s of %s have been owned by no member of group %s for %.0f s (a static member "
                    "rejoined between the two phases of a rebalance): this member rejoins so the group rebalances",
                    sorted(hole), self.topic, self.group, self.clock.grace_s)
        return True

    def _waiting(self, now: float) -> None:
        """An answer that is late: a failed observation past STALE_S; past RETIRE_S, a new client."""
        waited = now - self._sent
        if waited >= STALE_S and not self._stale:
            self._stale = True
            self.clock.observe(None, now)
            self._last_view = None
        if waited >= RETIRE_S:
            log.warning("describing group %s has had no answer for %.0f s: replacing the admin client", self.group,
                        waited)
            holder = [self._admin]  # the only reference left once replaced: destroyed on the thread
            self._admin, self._pending = self._new_admin(), None
            threading.Thread(target=holder.clear, name="drop-coverage-admin", daemon=True).start()

    def _view(self, group_f: Future[Any], topic_f: Future[Any]) -> GroupView | None:
        try:
            desc, topic = group_f.result(0), topic_f.result(0)
        except KafkaException as exc:
            log.debug("describing %s: %s", self.group, exc)
            self._last_view = None
            return None
        owned = {(m.group_instance_id or m.member_id):
                 frozenset(tp.partition for tp in (m.assignment.topic_partitions if m.assignment else [])
                           if tp.topic == self.topic)
                 for m in desc.members}
        self._last_view = GroupView(desc.state == ConsumerGroupState.STABLE, len(topic.partitions), owned)
        return self._last_view
