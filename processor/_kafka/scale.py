"""`processor topics scale --partitions N`: grow commands, events and timers together, record
the new layout in the control topic, and wait while the running processors hand off the
workflows that move (engine/handoff.py), reporting progress."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from confluent_kafka.admin import NewPartitions  # type: ignore[attr-defined]

from processor._engine.growth import Layout, growth_problem, scale_problem
from processor._kafka.control import handoff_key, read_layout, received_key, settled, write_layout
from processor._kafka.topics import TopicNames, admin_client
from processor.exceptions import ConfigError, KafkaUnavailableError


def live_counts(bootstrap: str, names: TopicNames) -> dict[str, int]:
    md = admin_client(bootstrap).list_topics(timeout=10)
    out = {}
    for name, topic in (("commands", names.commands), ("events", names.events), ("timers", names.timers)):
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ConfigError(f"topic {topic} does not exist: run `processor topics create` first")
        out[name] = len(md.topics[topic].partitions)
    return out


def scale(bootstrap: str, prefix: str, target: int, timeout_s: float, say: Callable[[str], None]) -> bool:
    """Grow to `target` partitions; True once every old partition has handed off (False: the
    timeout passed first -- the growth goes on while processors run)."""
    names = TopicNames(prefix)
    counts = live_counts(bootstrap, names)
    layout, control = read_layout(bootstrap, names.control)
    if layout is None:
        if len(set(counts.values())) > 1:
            raise ConfigError(growth_problem(Layout(min(counts.values())), **counts) or "topics disagree")
        layout = Layout(counts["commands"])
        write_layout(bootstrap, names.control, layout)
    resuming = layout.partitions < target and set(counts.values()) <= {layout.partitions, target}
    if not (resuming and max(counts.values()) == target):
        problem = scale_problem(layout, settled(layout, control), counts["commands"], target)
        if problem is None and len(set(counts.values())) > 1:
            problem = growth_problem(layout, **counts)
        if problem is not None:
            raise ConfigError(problem)
    if not settled(layout, control):
        raise ConfigError(scale_problem(layout, False, counts["commands"], target) or "a growth is in progress")
    admin = admin_client(bootstrap)
    # events and timers first: nothing is written to their new partitions before commands grow.
    for group in ((names.events, names.timers), (names.commands,)):
        todo = [NewPartitions(t, target) for t in group if counts[_role(names, t)] < target]
        if todo:
            for topic, fut in admin.create_partitions(todo, request_timeout=30).items():
                try:
                    fut.result(60)
                except Exception as exc:  # noqa: BLE001 - Kafka's reason, in one line
                    raise KafkaUnavailableError(f"could not grow {topic} to {target} partitions: {exc}") from None
            say(f"grew {', '.join(p.topic for p in todo)} to {target} partitions")
    new = layout.grown(target)
    write_layout(bootstrap, names.control, new)
    say(f"layout: {target} partitions (epoch {new.epoch}); processors hand off the workflows that move")
    deadline = time.monotonic() + timeout_s
    reported = (-1, -1)
    while True:
        _, control = read_layout(bootstrap, names.control)
        done = [p for p in range(new.previous) if handoff_key(new.epoch, p) in control]
        received = [q for q in range(new.previous, target) if received_key(new.epoch, q) in control]
        if (len(done), len(received)) != reported:
            moved = sum(json.loads(control[handoff_key(new.epoch, p)])["handed_off"] for p in done)
            say(f"{len(done)} of {new.previous} old partitions handed off ({moved} workflows moved); "
                f"{len(received)} of {target - new.previous} new partitions complete")
            reported = (len(done), len(received))
        if settled(new, control):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def _role(names: TopicNames, topic: str) -> str:
    return {names.commands: "commands", names.events: "events", names.timers: "timers"}[topic]
