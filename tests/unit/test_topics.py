"""Topic creation and verification against an in-memory twin of the AdminClient whose metadata
lags the way a loaded broker's does: a topic stays out of the listing for its first N listings."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from processor._kafka import topics
from processor._kafka.topics import ensure_with, load_specs
from processor.exceptions import KafkaUnavailableError, TopicMismatchError


@dataclass
class _Topic:
    partitions: int
    configs: dict[str, str]
    hidden: int  # listings (and config reads) that still do not show it


@dataclass
class _Listed:
    partitions: dict[int, object]
    error: KafkaError | None = None


@dataclass
class _Metadata:
    topics: dict[str, _Listed]
    brokers: dict[int, object] = field(default_factory=lambda: {1: object()})


@dataclass
class _Entry:
    value: str


def _done(value: Any = None, error: KafkaError | None = None) -> Future[Any]:
    fut: Future[Any] = Future()
    if error is None:
        fut.set_result(value)
    else:
        fut.set_exception(KafkaException(error))
    return fut


class LaggingAdmin:
    """The AdminPort surface over a dict of topics. `lag` listings pass before a topic created
    through it (or pre-seeded with `existing(..., hidden=N)`) shows up in list_topics."""

    def __init__(self, lag: int = 0) -> None:
        self.lag = lag
        self.topics: dict[str, _Topic] = {}
        self.listings = 0
        self.creates: list[str] = []

    def existing(self, name: str, partitions: int, configs: dict[str, str], hidden: int = 0) -> None:
        self.topics[name] = _Topic(partitions, configs, hidden)

    def list_topics(self, *args: Any, **kwargs: Any) -> _Metadata:
        self.listings += 1
        listed = {}
        for name, t in self.topics.items():
            if t.hidden > 0:
                t.hidden -= 1
                continue
            listed[name] = _Listed(dict.fromkeys(range(t.partitions), object()))
        return _Metadata(listed)

    def create_topics(self, new_topics: list[NewTopic], **kwargs: Any) -> dict[str, Future[Any]]:
        out: dict[str, Future[Any]] = {}
        for nt in new_topics:
            self.creates.append(nt.topic)
            if nt.topic in self.topics:
                out[nt.topic] = _done(error=KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))
                continue
            self.topics[nt.topic] = _Topic(nt.num_partitions, dict(nt.config or {}), self.lag)
            out[nt.topic] = _done()
        return out

    def describe_configs(self, resources: list[ConfigResource], **kwargs: Any) -> dict[ConfigResource, Future[Any]]:
        out: dict[ConfigResource, Future[Any]] = {}
        for res in resources:
            t = self.topics.get(res.name)
            if t is None or t.hidden > 0:
                out[res] = _done(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
            else:
                configs = {"cleanup.policy": "delete", **t.configs}
                out[res] = _done({k: _Entry(v) for k, v in configs.items()})
        return out


def test_a_mismatched_topic_that_was_not_listed_yet_is_refused() -> None:
    # The integration failure under load: the topic exists with the wrong cleanup.policy, but the
    # broker's metadata does not list it yet; our create returns TOPIC_ALREADY_EXISTS, and the
    # listing right after still lacks it, so it used to escape verification.
    admin = LaggingAdmin()
    admin.existing("p.events", 2, {"cleanup.policy": "delete"}, hidden=3)
    with pytest.raises(TopicMismatchError, match=r"p\.events has cleanup.policy=delete, declared compact"):
        ensure_with(admin, load_specs("p", partitions=2))
    assert "p.events" in admin.creates  # it did take the create-and-race path


def test_a_wrong_partition_count_behind_lag_is_refused() -> None:
    admin = LaggingAdmin()
    for s in load_specs("p", partitions=2):
        admin.existing(s.name, 2, s.configs, hidden=2)
    with pytest.raises(TopicMismatchError, match=r"p\.events has 2 partitions, declared 4"):
        ensure_with(admin, load_specs("p", partitions=4))


def test_co_partitioned_topics_of_different_counts_are_refused_naming_the_fix() -> None:
    admin = LaggingAdmin()
    for s in load_specs("p", partitions=4):
        admin.existing(s.name, 8 if s.name == "p.commands" else 4, s.configs)
    with pytest.raises(TopicMismatchError, match=r"different partition counts \[4, 8\].*"
                                                 r"`processor topics scale --partitions 8` grows the others"):
        ensure_with(admin, load_specs("p", partitions=4), exact_partitions=False)


def test_created_topics_are_waited_for_and_verified() -> None:
    admin = LaggingAdmin(lag=4)
    specs = load_specs("p", partitions=3)
    created = ensure_with(admin, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert admin.listings >= 5  # kept listing until the created topics showed
    assert ensure_with(admin, specs) == []  # and a second run verifies without creating
    assert len(admin.creates) == len(specs)


def test_topics_that_never_show_are_named_in_the_error() -> None:
    admin = LaggingAdmin(lag=10**9)
    specs = load_specs("p", partitions=1)
    with pytest.raises(KafkaUnavailableError, match=r"p\.commands, p\.events, .*still not visible") as info:
        ensure_with(admin, specs, visible_within=0.2)
    assert "Run `processor topics create` again" in str(info.value)


def test_config_reads_retry_while_the_broker_does_not_know_the_topic() -> None:
    admin = LaggingAdmin()
    admin.existing("p.events", 1, {"cleanup.policy": "compact"})
    # Listed, but describe_configs still answers UNKNOWN_TOPIC_OR_PART for a moment.
    calls = {"n": 0}
    real = admin.describe_configs

    def flaky(resources: list[ConfigResource], **kwargs: Any) -> dict[ConfigResource, Future[Any]]:
        calls["n"] += 1
        if calls["n"] < 3:
            return {r: _done(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)) for r in resources}
        return real(resources)

    admin.describe_configs = flaky  # type: ignore[method-assign]
    assert topics.live_configs(admin, ["p.events"])["p.events"]["cleanup.policy"] == "compact"
    assert calls["n"] == 3


def test_ensure_topics_uses_the_admin_client(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = LaggingAdmin()
    admin.existing("p.events", 2, {"cleanup.policy": "delete"}, hidden=3)
    monkeypatch.setattr(topics, "admin_client", lambda bootstrap: admin)
    with pytest.raises(TopicMismatchError, match=r"cleanup.policy=delete, declared compact"):
        topics.ensure_topics("unused:9092", load_specs("p", partitions=2))


def test_replication_follows_the_cluster_size_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from processor._kafka.topics import replication
    from processor.exceptions import ConfigError

    monkeypatch.delenv("DP_REPLICATION_FACTOR", raising=False)
    monkeypatch.delenv("DP_MIN_INSYNC_REPLICAS", raising=False)
    assert replication(1) == (1, 1)
    assert replication(2) == (2, 1)
    assert replication(5) == (3, 2)
    assert replication(5, declared=2) == (2, 1)
    monkeypatch.setenv("DP_REPLICATION_FACTOR", "3")
    with pytest.raises(ConfigError, match="replication factor 3 needs 3 brokers; the cluster has 1"):
        replication(1)
    monkeypatch.setenv("DP_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(ConfigError, match="min.insync.replicas 4 must be between 1 and the replication factor 3"):
        replication(3)


def test_created_topics_get_the_replication_and_min_insync_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DP_REPLICATION_FACTOR", raising=False)
    monkeypatch.delenv("DP_MIN_INSYNC_REPLICAS", raising=False)
    seen: list[NewTopic] = []
    admin = LaggingAdmin()
    original = admin.create_topics
    admin.create_topics = lambda new, **kw: (seen.extend(new), original(new, **kw))[1]  # type: ignore[method-assign]
    ensure_with(admin, load_specs("p", partitions=2))
    assert seen and all(t.replication_factor == 1 for t in seen)
    assert all(admin.topics[t.topic].configs["min.insync.replicas"] == "1" for t in seen)


def test_a_process_that_may_not_create_topics_names_the_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DP_NO_CREATE", "1")
    admin = LaggingAdmin()
    for s in load_specs("p", partitions=2):
        if s.name != "p.timers":
            admin.existing(s.name, 2, s.configs)
    with pytest.raises(TopicMismatchError, match=r"topic\(s\) p\.timers do not exist and this process may not "
                                                 r"create topics"):
        ensure_with(admin, load_specs("p", partitions=2), exact_partitions=False)
    assert admin.creates == []
