"""Who a processor is to Kafka: its transactional.id, stable for as long as its state dir lives,
which is also its group.instance.id (a static member of the processor group).

A restarted process reuses it, so its init_transactions fences its own zombie (a paused or
half-dead predecessor) at once and aborts whatever transaction that one left open, and the group
gives it its partitions back without a rebalance. A process that takes partitions over from
one that is gone fences that one's id (fence_departed_owners) for the same reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor._engine.coverage import ADMIN_TIMEOUT_S
from processor._engine.settings import Settings
from processor._kafka.config import client_config
from processor.exceptions import KafkaUnavailableError

log = logging.getLogger("processor.loop")

ID_FILE = "transactional.id"


WORKER_ID_FILE = "group.instance.id"


def stable_transactional_id(settings: Settings) -> str:
    """Read from the state dir, or made and written there on the first start."""
    return _stable(settings.state_dir / ID_FILE, f"{settings.prefix}.processor")


def stable_worker_instance_id(directory: Path, prefix: str, queue: str) -> str:
    """An activity worker's group.instance.id, kept in its own directory of the state dir: a
    worker restarted by its supervisor takes its task partitions back at once instead of every
    task waiting for the group to expire the dead member (measured: 6.1 s with no activity
    running anywhere, with the one worker killed and restarted)."""
    return _stable(directory / WORKER_ID_FILE, f"{prefix}.worker.{queue}")


def _stable(path: Path, stem: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    made = f"{stem}.{uuid.uuid4().hex[:12]}"
    path.write_text(made)
    return made


def to_fence(last_committers: Iterable[str], ours: str, live_members: Iterable[str]) -> list[str]:
    """Of the transactional.ids that last committed the input offsets of partitions this process
    was just given, those to fence before restoring: not ours, and no longer the
    group.instance.id of a live member of the group (a live one handed the partition over
    between its transactions, so it has none open on it). A departed owner may have died inside
    a transaction, which holds back every read_committed reader of the partitions it wrote --
    the restore among them -- until the broker times it out (transaction.timeout.ms, plus its
    abort sweep: 10-20 s). Fencing it aborts that transaction now; fencing a zombie (a
    paused process that was expelled from the group) is what exactly-once needs anyway."""
    live = set(live_members)
    return sorted({tid for tid in last_committers if tid and tid != ours and tid not in live})


def fence_departed_owners(settings: Settings, partitions: list[int], ours: str, timeout: float = 10.0) -> list[str]:
    """Fence (init_transactions with their transactional.id) the departed last owners of
    `partitions` (to_fence). Each transaction commits its input offsets with the committer's
    transactional.id as their metadata (loop.py, step 3); the offsets are read without
    require_stable, so a pending commit of the dead owner's open transaction does not block
    the read. Returns the ids fenced."""
    group = settings.processor_group
    admin = AdminClient(client_config("admin", settings.bootstrap, "fence"))
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(settings.topics.commands, p) for p in partitions])
    # Coordinator-bound admin requests must never time out inside librdkafka 2.16 (coverage.py's
    # docstring: the process aborts when the coordinator comes back): the wait is bounded here,
    # and a client given up on is destroyed with its request in flight, which is safe.
    try:
        offsets = admin.list_consumer_group_offsets([request], require_stable=False,
                                                    request_timeout=ADMIN_TIMEOUT_S)[group].result(timeout)
        committers = [tp.metadata or "" for tp in offsets.topic_partitions or [] if tp.error is None]
        if not any(tid and tid != ours for tid in committers):
            return []
        members = admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)[group] \
            .result(timeout).members
    except (KafkaException, FutureTimeout) as exc:
        why = exc.args[0] if isinstance(exc, KafkaException) else f"no answer within {timeout:.0f} s"
        raise KafkaUnavailableError(f"cannot read the last owners of partitions {partitions}: {why}") from None
    fenced = to_fence(committers, ours, (m.group_instance_id or "" for m in members))
    for tid in fenced:
        producer = Producer(client_config("producer", settings.bootstrap, "fence", fixed={"transactional.id": tid}))
        try:
            producer.init_transactions(timeout)  # bumps the epoch: the old one is fenced, its transaction aborted
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot fence transactional.id {tid!r}: {exc.args[0]}") from None
        log.warning("fenced %s, the departed last owner of partitions %s: its open transaction (if any) is aborted "
                    "now rather than when the broker times it out", tid, partitions)
    return fenced
