"""Growing the co-partitioned topics online: the layout and its pure rules.

A workflow lives in partition `murmur2(id) % P` of commands, events and timers. When P grows,
some workflows get a new home. The engine's P is not the topics' live count but the **layout**,
a record in the compacted control topic (`<prefix>.control`, key `layout`): `{partitions, previous,
epoch}`. It changes only by a growth that these rules accept, so a count changed by plain Kafka
tools never reroutes a workflow to a partition that holds none of its history: until the layout
follows, commands that land on a partition beyond it are forwarded to their home under it.

Growth is by a whole multiple (P -> k*P). Then `murmur2(id) % kP` is congruent to
`murmur2(id) % P` modulo P: a workflow of old partition p either stays in p or moves to one of
p + P, p + 2P, ..., and every new partition q has exactly one source, q % P. Workflows of the
old partitions that stay never pause; only the new partitions wait for their hand-offs. The
hand-off protocol itself is engine/handoff.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from processor._codec.partitioner import partition_for

LAYOUT_KEY = b"layout"


@dataclass(frozen=True)
class Layout:
    """`partitions` now; `previous` before the last growth (0: never grown); `epoch` counts growths."""

    partitions: int
    previous: int = 0
    epoch: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps({"partitions": self.partitions, "previous": self.previous, "epoch": self.epoch}).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> Layout:
        d = json.loads(raw)
        return Layout(int(d["partitions"]), int(d.get("previous", 0)), int(d.get("epoch", 0)))

    def grown(self, partitions: int) -> Layout:
        return Layout(partitions, self.partitions, self.epoch + 1)

    def is_new(self, partition: int) -> bool:
        """Whether `partition` was added by the last growth (it waits for its hand-offs)."""
        return 0 < self.previous <= partition < self.partitions

    def is_old(self, partition: int) -> bool:
        """Whether `partition` existed before the last growth (it hands off what moved)."""
        return self.previous > 0 and partition < self.previous

    def source(self, partition: int) -> int | None:
        """The old partition whose workflows may move to the new `partition`."""
        return partition % self.previous if self.is_new(partition) else None

    def targets(self, partition: int) -> list[int]:
        """The new partitions the old `partition` hands off to."""
        if not self.is_old(partition):
            return []
        return list(range(partition + self.previous, self.partitions, self.previous))


def home(workflow_id: str, partitions: int) -> int:
    return partition_for(workflow_id.encode(), partitions)


def growth_problem(layout: Layout, commands: int, events: int, timers: int) -> str | None:
    """None if the live counts can become the next layout (or equal it), else why not and what
    to do. Shrinking and counts that disagree are refused; so is a count that is not a whole
    multiple of the layout's."""
    counts = {"commands": commands, "events": events, "timers": timers}
    if len(set(counts.values())) > 1:
        have = ", ".join(f"{name} {n}" for name, n in counts.items())
        return (f"the co-partitioned topics have different partition counts ({have}): give all three the same "
                f"count (`processor topics scale --partitions {max(counts.values())}` finishes a growth)")
    if commands < layout.partitions:
        return (f"the topics have {commands} partitions but the layout has {layout.partitions}: partitions cannot be "
                "removed from Kafka topics; was the topic recreated?")
    if commands % layout.partitions:
        multiples = ", ".join(str(layout.partitions * k) for k in (2, 3, 4))
        return (f"the topics grew from {layout.partitions} to {commands} partitions, which is not a whole multiple of "
                f"{layout.partitions}: grow to a multiple ({multiples}, ...) so that every workflow moves to one "
                "known partition; until then commands on the partitions beyond the layout are forwarded")
    return None


def scale_problem(layout: Layout, settled: bool, commands: int, target: int) -> str | None:
    """What `processor topics scale --partitions target` must refuse, or None."""
    if not settled:
        return (f"a growth from {layout.previous} to {layout.partitions} partitions is still in progress: wait until "
                "every old partition has handed off (processors must be running), then scale again")
    if target < commands:
        return f"the topics have {commands} partitions; partitions cannot be removed (asked for {target})"
    if target == commands:
        return f"the topics already have {commands} partitions"
    if target % commands:
        return (f"{target} is not a whole multiple of {commands}: grow to {commands * 2}, {commands * 3}, ... so that "
                "every workflow moves to one known partition and the others never pause")
    return None
