"""The layout watch adopts a growth only once the transactional producer knows the new
partitions: a record for a partition it has not heard of fails the whole transaction."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from processor._engine import layout_watch
from processor._engine.growth import Layout
from processor._engine.layout_watch import LayoutWatch
from processor._engine.settings import Settings


class Metadata:
    """What list_topics answers: `counts[topic]` partitions per topic."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked: list[str] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.asked.append(topic)
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=dict.fromkeys(range(self.counts[topic])))})


class Engine:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.handing_off: set[int] = set()
        self.waiting: set[int] = set()

    def adopt(self, layout: Layout) -> None:
        self.layout = layout


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(bootstrap="unused:9092", prefix="wf", state_dir=tmp_path)


def _topics(s: Settings) -> tuple[str, str, str]:
    return s.topics.commands, s.topics.events, s.topics.timers


def test_a_recorded_growth_waits_until_the_producer_sees_the_new_partitions(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    grown = Layout(8, 4, 1)
    monkeypatch.setattr(layout_watch, "read_layout", lambda *_: (grown, {}))
    producer = Metadata(dict.fromkeys(_topics(settings), 4))
    watch = LayoutWatch(settings, lambda: Metadata({}), lambda: producer)  # type: ignore[arg-type,return-value]
    engine = Engine(Layout(4))
    assert not watch.catch_up(engine)  # type: ignore[arg-type]
    assert engine.layout == Layout(4), "not adopted: the producer would fail on partition 4"
    producer.counts = dict.fromkeys(_topics(settings), 8)
    assert watch.catch_up(engine)  # type: ignore[arg-type]
    assert engine.layout == grown
    assert set(producer.asked) == set(_topics(settings)), "it asked the producer itself, for the three topics"


def test_a_growth_noticed_by_the_counts_waits_for_the_producer_too(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[Layout] = []
    monkeypatch.setattr(layout_watch, "read_layout", lambda *_: (Layout(4), {}))
    monkeypatch.setattr(layout_watch, "write_layout", lambda _b, _t, layout: written.append(layout))
    consumer = Metadata(dict.fromkeys(_topics(settings), 8))
    producer = Metadata({settings.topics.commands: 8, settings.topics.events: 8, settings.topics.timers: 4})
    watch = LayoutWatch(settings, lambda: consumer, lambda: producer)  # type: ignore[arg-type,return-value]
    engine = Engine(Layout(4))
    assert not watch.check(engine)  # type: ignore[arg-type]
    assert engine.layout == Layout(4)
    producer.counts[settings.topics.timers] = 8
    watch._next = 0.0  # noqa: SLF001 - the next periodic check is due
    assert watch.check(engine)  # type: ignore[arg-type]
    assert engine.layout == Layout(8, 4, 1) and written[-1] == Layout(8, 4, 1)
