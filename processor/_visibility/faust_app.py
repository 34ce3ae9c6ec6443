"""The visibility projection's mechanism: a faust-streaming app that consumes wf.events into
RocksDB-backed tables and serves the JSON API (and the web UI) from the same process.

Why faust here and not in the processor: the read side may lag and redeliver (at-least-once fits;
`Visibility.apply` is idempotent by run and seq), it is rebuilt from the log on a fresh machine
(faust restores its tables from their changelog topics, `<prefix>.visibility-<table>-changelog`),
and its tables are partitioned like wf.events -- the changelog partition of a run is the
wf.events partition of its events -- so a second `processor ui` takes half the partitions.

Read committed: faust's aiokafka consumer reads uncommitted records unless the app itself is
exactly-once. A projection of aborted events would show steps that never happened, so the
transport below sets `isolation_level=read_committed` on the consumer it builds.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event
from faust.transport import producer as faust_producer
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, StreamT
from faust.web.drivers import DRIVERS as WEB_DRIVERS
from faust.web.drivers import aiohttp as faust_web

from processor._codec import default_codec
from processor._kafka.topics import TopicNames
from processor._visibility.service import Visibility
from processor._visibility.web import add_routes
from processor.exceptions import ConfigError

__all__ = ["TABLES", "Transport", "Web", "build_app", "changelog_specs"]

log = logging.getLogger("processor.visibility")
SCHEME = "dpkafka"
BATCH, BATCH_WITHIN_S = 2_000, 0.05  # events folded per batch; how long a batch waits to fill
WEB_SCHEME = "dpweb"
TABLES = ("runs", "latest", "history")


def app_id(prefix: str) -> str:
    return f"{prefix}.visibility"


def changelog_specs(prefix: str, partitions: int) -> list[Any]:
    """The tables' changelog topics, declared here so `processor ui` creates them, compacted and
    with wf.events' partition count, and waits until the broker lists them *before* faust starts.

    Why not let faust create them: its consumer records a topic's partition count when it
    subscribes; a changelog topic created a moment before is often not in that metadata yet, and
    the first table write then fails with "the changelog topic has 0 partitions" -- the agent dies
    and the projection stops."""
    from processor._kafka.topics import TopicSpec

    return [TopicSpec(f"{app_id(prefix)}-{table}-changelog", partitions, None, {"cleanup.policy": "compact"})
            for table in TABLES]


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - read by AIOKafkaConsumer.start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport, reading committed records only."""

    Consumer = _Consumer


class Web(faust_web.Web):
    """faust's aiohttp server serving our pages only: / is the workflow list (faust mounts its own
    index there), and faust's /table and /router views would show raw table contents."""

    default_blueprints = []
    production_blueprints = []
    debug_blueprints = []
    optional_blueprints = []


def _register() -> None:
    TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
    WEB_DRIVERS.aliases.setdefault(WEB_SCHEME, f"{__name__}:Web")


def build_app(bootstrap: str, prefix: str, partitions: int, state_dir: Path, host: str, port: int,
              commands: Any = None) -> tuple[faust.App, Visibility]:
    """The faust app and the Visibility bound to its tables. `partitions`: wf.events' count (the
    tables must have as many). `commands`: what the UI's buttons call (a processor Client)."""
    _register()
    topics = TopicNames(prefix)
    brokers = ";".join(f"{SCHEME}://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip())
    if not brokers:
        raise ConfigError("processor ui needs a Kafka bootstrap (host:port)")
    state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(prefix), broker=brokers, store="rocksdb://", datadir=str(state_dir),
        topic_partitions=partitions, web=f"{WEB_SCHEME}://", web_enabled=True, web_bind=host, web_port=port,
        web_host=host,
        web_in_thread=False, table_standby_replicas=0, consumer_auto_offset_reset="earliest",
        broker_commit_every=1_000, broker_commit_interval=1.0, stream_wait_empty=False,
        producer_acks=-1, autodiscover=False, logging_config=None,
        # A SIGKILLed `processor ui` holds its partitions until its session expires; faust's 60 s
        # default kept a replacement waiting a minute before it served anything.
        broker_session_timeout=10.0, broker_heartbeat_interval=3.0,
        # Table writes become changelog records: batch them (16 KB batches sent one by one were
        # the projection's bottleneck at 10,000 workflows).
        producer_max_batch_size=1_000_000, producer_linger_ms=5,
    )
    # faust makes the agent wait whenever 100 changelog records are unsent, and then waits for
    # them one by one; a batch of 2,000 events writes a few thousand.
    faust_producer.ProducerBuffer.max_messages = 20_000
    events = app.topic(topics.events, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions, internal=False)
    # No value_type: faust would take a type for a model class; the values are plain JSON.
    runs = app.Table("runs", partitions=partitions, help="run key -> record")
    latest = app.Table("latest", partitions=partitions, key_type=str, value_type=str,
                       help="workflow id -> its latest run")
    history = app.Table("history", partitions=partitions, key_type=str, value_type=bytes,  # bytes: stored raw
                        help="wf.events key -> the raw event")
    vis = Visibility(default_codec(), runs, latest, history)
    # The in-memory mirror of the runs table (Visibility._every_run) is valid between rebalances.
    vis.epoch = lambda: int(app.rebalancing_count)
    vis.steady = lambda: not app.rebalancing and not app.in_recovery

    @app.agent(events, name="project")
    async def project(stream: StreamT[Any]) -> None:
        # In batches: each run's record is written once per batch (Visibility.apply_batch). A
        # table write goes to the changelog partition of faust's *current* event, so each
        # partition's events are applied with one of them made current.
        async for batch in stream.take_events(BATCH, within=BATCH_WITHIN_S):  # type: ignore[attr-defined]
            by_partition: dict[int, list[Any]] = {}
            for event in batch:
                by_partition.setdefault(event.message.partition, []).append(event)
            for partition_events in by_partition.values():
                _current_event.set(weakref.ref(partition_events[-1]))
                try:
                    vis.apply_batch((m.key, m.value, m.partition, m.offset, m.value is None and _pruned(m.headers))
                                    for m in (e.message for e in partition_events))
                except Exception as exc:  # noqa: BLE001 - a projection that stops folding must not serve on
                    last = partition_events[-1].message
                    log.error("visibility: the projection stopped in %s[%d] before @%d: %s", last.topic,
                              last.partition, last.offset, exc)
                    await app.crash(exc)
                    raise

    async def lag() -> dict[str, Any]:
        """Per partition of wf.events this process owns: records not yet fetched (the end of the
        log minus the fetch position; transaction markers count), and how long ago the last
        applied event was written."""
        unfetched: dict[int, int] = {}
        for tp in sorted(app.consumer.assignment()):
            if tp.topic != topics.events:
                continue
            position = await app.consumer.position(TP(tp.topic, tp.partition))
            high = app.consumer.highwater(TP(tp.topic, tp.partition))
            unfetched[tp.partition] = max(0, (high or 0) - (position or 0))
        now = int(time.time() * 1000)
        ages = {p: now - ms for p, ms in vis.progress.event_ms.items()}
        return {"partitions": partitions, "owned": sorted(unfetched), "unfetched_records": unfetched,
                "total_unfetched": sum(unfetched.values()), "last_event_age_ms": ages,
                "events_applied": vis.progress.events, "duplicates_skipped": vis.progress.duplicates,
                "runs_pruned": vis.progress.pruned,
                "undecodable": vis.progress.undecodable}

    add_routes(app, vis, lag, commands)
    return app, vis


def _pruned(headers: Any) -> bool:
    """Whether a tombstone carries the retention header (dp.pruned; engine/retention.py)."""
    items = headers.items() if hasattr(headers, "items") else (headers or [])
    return any(k == "dp.pruned" for k, _ in items)


def run(bootstrap: str, prefix: str, state_dir: Path, host: str, port: int, verbose: bool = False) -> int:
    """`processor ui`: run the projection and serve its API and UI until SIGTERM/SIGINT."""
    from processor._kafka.topics import ensure_topics, require_reachable
    from processor.client import Client

    require_reachable(bootstrap)
    partitions = _events_partitions(bootstrap, TopicNames(prefix).events)
    ensure_topics(bootstrap, changelog_specs(prefix, partitions), exact_partitions=True)
    client = Client(bootstrap, prefix=prefix)
    app, _ = build_app(bootstrap, prefix, partitions, state_dir, host, port, commands=client)
    os.environ.setdefault("F_FORCE_COLOR", "0")
    if not verbose:  # aiokafka and faust log at debug level per record otherwise: 12% of the CPU
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="INFO" if verbose else "WARNING", quiet=True, redirect_stdouts=False)
    print(f"visibility: http://{host}:{port}/ (API under /api), {partitions} partitions of "
          f"{TopicNames(prefix).events}, state in {state_dir}", flush=True)
    try:
        worker.execute_from_commandline()
    finally:
        client.close()
    return 0


def _events_partitions(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    from processor._kafka.config import client_config

    admin = AdminClient(client_config("admin", bootstrap, "visibility-admin"))
    md = admin.list_topics(topic, timeout=30)
    found = md.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ConfigError(f"topic {topic} does not exist: create the topics first (`processor topics create`)")
    return len(found.partitions)
