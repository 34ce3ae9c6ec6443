"""The broker and the declared topics behave as the design relies on (real Kafka)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor._kafka.topics import ensure_topics, live_configs, load_specs
from processor.exceptions import TopicMismatchError

pytestmark = pytest.mark.integration


def _drain(bootstrap: str, topic: str, *, isolation: str = "read_committed", idle: float = 2.0,
           limit: float = 20.0) -> list[tuple[bytes | None, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"drain-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "isolation.level": isolation, "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + limit
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < idle:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out.append((m.key(), m.value()))
            last = time.monotonic()
    finally:
        c.close()
    return out


def test_declared_topics_exist_with_declared_configs(kafka_bootstrap: str, prefix: str) -> None:
    specs = load_specs(prefix, partitions=3)
    created = ensure_topics(kafka_bootstrap, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    md = admin.list_topics(timeout=10)
    live = live_configs(admin, [s.name for s in specs])
    assert {s.name: s.partitions for s in specs if s.partitions != 3} == {f"{prefix}.control": 1}
    for s in specs:
        assert len(md.topics[s.name].partitions) == s.partitions
        for key, value in s.configs.items():
            assert live[s.name][key] == value, (s.name, key)
    assert live[f"{prefix}.events"]["cleanup.policy"] == "compact"
    assert live[f"{prefix}.timers"]["cleanup.policy"] == "compact"
    assert live[f"{prefix}.commands"]["cleanup.policy"] == "delete"
    # A second create is a no-op that verifies.
    assert ensure_topics(kafka_bootstrap, specs) == []


def test_mismatched_existing_topic_is_refused(kafka_bootstrap: str, prefix: str) -> None:
    ensure_topics(kafka_bootstrap, load_specs(prefix, partitions=2))
    with pytest.raises(TopicMismatchError, match=rf"{prefix}\.events has 2 partitions, declared 4"):
        ensure_topics(kafka_bootstrap, load_specs(prefix, partitions=4))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    wrong = f"{prefix}x"
    f = admin.create_topics([NewTopic(f"{wrong}.events", 2, 1, config={"cleanup.policy": "delete"})])
    f[f"{wrong}.events"].result(30)
    with pytest.raises(TopicMismatchError, match=r"cleanup.policy=delete, declared compact"):
        ensure_topics(kafka_bootstrap, load_specs(wrong, partitions=2))


def test_concurrent_creates_each_create_once_and_all_verify(kafka_bootstrap: str, prefix: str) -> None:
    # Two of the three lose every creation race (TOPIC_ALREADY_EXISTS) and must still verify all
    # topics once the broker's metadata lists them.
    specs = load_specs(prefix, partitions=2)
    created: list[list[str]] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            created.append(ensure_topics(kafka_bootstrap, specs))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(name for names in created for name in names) == sorted(s.name for s in specs)
    with pytest.raises(TopicMismatchError, match=rf"{prefix}\.events has 2 partitions, declared 3"):
        ensure_topics(kafka_bootstrap, load_specs(prefix, partitions=3))


def test_compaction_drops_superseded_records_and_tombstones(kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.compacted"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    cfg = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
           "min.compaction.lag.ms": "0", "delete.retention.ms": "0", "max.compaction.lag.ms": "100"}
    admin.create_topics([NewTopic(topic, 1, 1, config=cfg)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(topic, b"v1", key=b"keep")
    p.produce(topic, b"v2", key=b"keep")
    p.produce(topic, b"x", key=b"gone")
    p.produce(topic, None, key=b"gone")  # tombstone
    p.flush()
    # The active segment is never cleaned: keep writing fillers so segments roll behind our keys.
    deadline = time.monotonic() + 90
    seen: list[tuple[bytes | None, bytes | None]] = []
    while time.monotonic() < deadline:
        for i in range(3):
            time.sleep(0.15)
            p.produce(topic, b"f", key=f"filler{i}".encode())
        p.flush()
        seen = [kv for kv in _drain(kafka_bootstrap, topic, idle=0.5) if not kv[0].startswith(b"filler")]
        if seen == [(b"keep", b"v2")]:
            break
        time.sleep(1)
    assert seen == [(b"keep", b"v2")], f"compaction did not happen in time: {seen}"


def test_aborted_transaction_is_invisible_to_read_committed(kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}.tx"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{prefix}-tx"})
    p.init_transactions(60)
    p.begin_transaction()
    p.produce(topic, b"aborted", key=b"k")
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.produce(topic, b"committed", key=b"k")
    p.commit_transaction()
    assert _drain(kafka_bootstrap, topic) == [(b"k", b"committed")]
    # read_uncommitted does see the aborted record: the isolation, not luck, hid it.
    values = [v for _, v in _drain(kafka_bootstrap, topic, isolation="read_uncommitted")]
    assert values == [b"aborted", b"committed"]


def test_topics_cli_create_and_describe(kafka_bootstrap: str, prefix: str) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "processor.cli", "topics", *args, "--bootstrap",
                               kafka_bootstrap, "--prefix", prefix], capture_output=True, text=True, check=False)

    plan = cli("create", "--partitions", "2", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"create   {prefix}.events partitions=2 replication.factor=1 cleanup.policy=compact" in plan.stdout
    assert "min.insync.replicas=1" in plan.stdout
    assert cli("describe", "--partitions", "2").stdout.count("MISSING") >= 3, "the dry run created nothing"
    too_many = cli("create", "--partitions", "2", "--replication-factor", "3")
    assert too_many.returncode == 2 and "replication factor 3 needs 3 brokers; the cluster has 1" in too_many.stderr
    created = cli("create", "--partitions", "2")
    assert created.returncode == 0, created.stderr
    assert live_configs(AdminClient({"bootstrap.servers": kafka_bootstrap}), [f"{prefix}.events"])[
        f"{prefix}.events"]["min.insync.replicas"] == "1"
    assert f"{prefix}.events" in created.stdout and "created" in created.stdout
    again = cli("create", "--partitions", "2")
    assert again.returncode == 0 and "created" not in again.stdout and "exists, matches" in again.stdout
    refused = cli("create", "--partitions", "3")
    assert refused.returncode == 2 and "has 2 partitions, declared 3" in refused.stderr
    described = cli("describe", "--partitions", "2")
    assert described.returncode == 0
    assert "cleanup.policy = compact / compact" in described.stdout and "MISSING" not in described.stdout


def test_a_process_that_may_not_create_topics_says_which_are_missing(kafka_bootstrap: str, prefix: str,
                                                                     tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "processor.cli", "run", "--app", "tests.apps.basic:app", "--role",
                           "processor", "--no-create", "--bootstrap", kafka_bootstrap, "--prefix", prefix,
                           "--state-dir", str(tmp_path)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: topic(s) {prefix}.commands, {prefix}.events, {prefix}.timers, {prefix}.control, "
        f"{prefix}.completions, {prefix}.replies, {prefix}.dlq do not exist and this process may not create topics "
        "(DP_NO_CREATE / --no-create): an administrator runs `processor topics create` (see --dry-run)"]
    listed = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in listed if t.startswith(f"{prefix}.")], "nothing was created"
