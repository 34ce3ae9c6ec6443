"""The processor's watch on the layout of the co-partitioned topics (growth.py): read it at
start, notice a growth (by `processor topics scale` or by plain Kafka tools) and adopt it
between transactions, or say why not and keep forwarding. The hand-offs it starts are the
engine's (handoff.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer

from processor._engine.engine import Engine
from processor._engine.growth import Layout, growth_problem
from processor._engine.settings import Settings
from processor._kafka.control import read_layout, settled, write_layout
from processor.exceptions import ProcessorError

log = logging.getLogger("processor.loop")

CHECK_EVERY_S = 5.0
FORCED_CHECK_EVERY_S = 1.0
PROBLEM_LOG_EVERY_S = 60.0


class LayoutWatch:
    def __init__(self, settings: Settings, consumer: Callable[[], Consumer],
                 producer: Callable[[], Producer] | None = None) -> None:
        self.settings = settings
        self._consumer = consumer
        self._producer = producer
        self._next = 0.0
        self._last = 0.0
        self._logged: dict[str, float] = {}

    def initial(self, live: int) -> Layout:
        """The layout in the control topic; written (as the live count) if there is none yet."""
        layout, _ = read_layout(self.settings.bootstrap, self.settings.topics.control)
        if layout is None:
            layout = Layout(live)
            write_layout(self.settings.bootstrap, self.settings.topics.control, layout)
            log.info("layout: %d partitions (recorded in %s)", live, self.settings.topics.control)
        return layout

    def live_counts(self) -> dict[str, int]:
        """Partition counts of commands, events and timers: three small metadata requests (all
        topics' metadata would grow with the cluster, every CHECK_EVERY_S)."""
        return self._counts(self._consumer())

    def _counts(self, client: Consumer | Producer) -> dict[str, int]:
        """Partition counts of the three topics in `client`'s metadata (asking refreshes it)."""
        t = self.settings.topics
        out = {}
        for name, topic in (("commands", t.commands), ("events", t.events), ("timers", t.timers)):
            md = client.list_topics(topic, timeout=5)
            out[name] = len(md.topics[topic].partitions) if topic in md.topics else 0
        return out

    def check(self, engine: Engine, *, force: bool = False) -> bool:
        """Adopt a growth of the topics if one is due and allowed; True if the layout changed.
        Every CHECK_EVERY_S, or (force) when a command arrived on a partition beyond the layout."""
        now = time.monotonic()
        if now < self._next and not (force and now - self._last >= FORCED_CHECK_EVERY_S):
            return False
        self._last, self._next = now, now + CHECK_EVERY_S
        try:
            counts = self.live_counts()
            return self._check(engine, counts)
        except (KafkaException, ProcessorError) as exc:
            self._say("unreadable", f"cannot check the layout of the topics now: {exc}")
            return False

    def _check(self, engine: Engine, counts: dict[str, int]) -> bool:
        layout = engine.layout
        if set(counts.values()) == {layout.partitions}:
            return False
        problem = growth_problem(layout, counts["commands"], counts["events"], counts["timers"])
        if problem is not None:
            self._say("problem", problem)
            return False
        if engine.handing_off or engine.waiting:
            self._say("busy", f"the topics grew to {counts['commands']} partitions; this processor first finishes "
                              f"its part of growth epoch {layout.epoch}")
            return False
        control_layout, control = read_layout(self.settings.bootstrap, self.settings.topics.control)
        if control_layout is not None and control_layout.epoch == layout.epoch + 1 \
                and control_layout.partitions == counts["commands"]:
            new = control_layout  # another process (or `processor topics scale`) recorded it
        elif control_layout is None or control_layout == layout:
            if not settled(layout, control):
                self._say("settling", f"the topics grew to {counts['commands']} partitions while growth epoch "
                                      f"{layout.epoch} ({layout.previous} -> {layout.partitions}) is still handing "
                                      "off; the new growth starts once it is done")
                return False
            new = layout.grown(counts["commands"])
            write_layout(self.settings.bootstrap, self.settings.topics.control, new)
        else:
            self._say("ahead", f"the control topic has layout {control_layout} and this processor {layout}: restart "
                               "it to take the recorded layout")
            return False
        if not self._producer_knows(new):
            return False
        engine.adopt(new)
        return True

    def catch_up(self, engine: Engine) -> bool:
        """Adopt the control topic's layout if it is the next one (another processor, or the
        verb, recorded a growth this processor has not noticed yet). True if it did."""
        layout, _ = read_layout(self.settings.bootstrap, self.settings.topics.control)
        if layout is None or layout.epoch <= engine.layout.epoch:
            return False
        if layout.epoch != engine.layout.epoch + 1:
            raise ProcessorError(f"the control topic's layout {layout} is more than one growth ahead of this "
                                 f"processor's {engine.layout}: restarting takes it")
        if not self._producer_knows(layout):
            return False
        engine.adopt(layout)
        return True

    def _producer_knows(self, layout: Layout) -> bool:
        """Make the transactional producer learn the new partitions before the engine writes to
        them: it refreshes its metadata on its own only now and then, and a record for a
        partition it does not know yet fails the whole transaction (the producer is then
        replaced and every partition restored -- seconds of pause for every workflow)."""
        if self._producer is None:
            return True
        try:
            counts = self._counts(self._producer())
        except KafkaException as exc:
            self._say("metadata", f"cannot read the producer's metadata of the topics now: {exc}")
            return False
        short = {name: n for name, n in counts.items() if n < layout.partitions}
        if short:
            seen = ", ".join(f"{name} {n}" for name, n in short.items())
            self._say("metadata", f"the producer sees fewer partitions ({seen}) than the layout's {layout.partitions}: "
                                  "the layout is adopted once it sees them")
            return False
        return True

    def _say(self, what: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -PROBLEM_LOG_EVERY_S) >= PROBLEM_LOG_EVERY_S:
            self._logged[what] = now
            log.warning("%s", message)
