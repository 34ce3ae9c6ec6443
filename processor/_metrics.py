"""Prometheus metrics of a processor or a worker process (`--metrics-port`, DP_METRICS_PORT).

Every process keeps its own registry and serves it at http://ADDR:PORT/metrics when a port is
given; with none, the objects still exist (tests read them) but nothing listens. What the hot loop
pays: the engine's per-command counts stay the plain ints of `Counters`, read only when scraped
(EngineCollector); a transaction observes five histogram samples, a fired timer one, an activity
attempt two. Gauges that need the engine's state (owned partitions, held workflows, consumer lag)
are refreshed on the loop's own thread from librdkafka's statistics callback, never read from the
HTTP thread. Metric names and labels are listed in docs/operations.md#metrics; the Grafana
dashboard is docs/grafana/durable-processor.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processor.exceptions import ConfigError

if TYPE_CHECKING:
    from processor._engine.engine import Engine

log = logging.getLogger("processor.metrics")

# librdkafka's statistics (and with them the gauges below) every this many ms, when metrics are on.
STATS_INTERVAL_MS = 5_000
_SECONDS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LATENESS = (.001, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0)
_ACTIVITY = (.001, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_BATCH = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

# Counters fields, as scraped: name -> help. A field missing here is a bug the unit test finds.
ENGINE_COUNTERS = {
    "commands": "Commands applied (starts, signals, activity results, ...)",
    "events": "History events appended to wf.events",
    "dlq": "Records sent to the dead-letter topic",
    "duplicates": "Commands recognised as repeats and applied no second time",
    "forwarded": "Commands forwarded to the partition that owns their workflow after a growth",
    "timers_fired": "Durable timers fired",
    "replays": "Workflow instances rebuilt by replaying their history (cache misses of running workflows)",
    "handed_off": "Workflows handed to their new partition after a growth",
    "parked": "Commands parked while their workflow was handed off",
    "redelivered": "Commands the consumer returned again after they were applied",
    "pruned": "Closed workflows removed by history retention",
    "cache_hits": "Workflow loads served by the instance cache",
    "cache_misses": "Workflow loads that read RocksDB",
}


class ProcessorMetrics:
    """A processor process's metrics (the engine's counts are read from it when scraped)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.transaction_seconds = Histogram(
            "dp_transaction_seconds", "One processor transaction, begin to RocksDB write", buckets=_SECONDS, registry=r)
        phase = Histogram("dp_transaction_phase_seconds", "One phase of a processor transaction: apply (the "
                          "commands and due timers), send_offsets, commit, rocksdb", ["phase"], buckets=_SECONDS,
                          registry=r)
        self.apply_seconds = phase.labels("apply")
        self.offsets_seconds = phase.labels("send_offsets")
        self.commit_seconds = phase.labels("commit")
        self.store_seconds = phase.labels("rocksdb")
        self.transaction_commands = Histogram(
            "dp_transaction_commands", "Commands applied per committed transaction", buckets=_BATCH, registry=r)
        self.transactions_aborted = Counter(
            "dp_transactions_aborted", "Transactions aborted (rebalance, error, a processing failure)", registry=r)
        self.timer_lateness = Histogram(
            "dp_timer_lateness_seconds", "How long after its due time a durable timer fired", buckets=_LATENESS,
            registry=r)
        self.restore_records = Counter(
            "dp_restore_records", "wf.events and wf.timers records applied while restoring partitions", registry=r)
        self.restore_seconds = Histogram(
            "dp_restore_seconds", "One restore of newly assigned partitions from the log",
            buckets=(.05, .1, .25, .5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0), registry=r)
        self.restoring = Gauge("dp_restoring_partitions", "Partitions assigned and being restored now", registry=r)
        self.owned = Gauge("dp_owned_partitions", "Partitions this processor owns and serves", registry=r)
        self.held = Gauge("dp_held_workflows", "Workflows held (their code fails to replay or blocks), on owned "
                          "partitions", registry=r)
        self.lag = ConsumerLag(r)
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Scrape `engine`'s counters and cache from now on."""
        if self._engine is None:
            self.registry.register(EngineCollector(engine))
        self._engine = engine

    def refresh(self) -> None:
        """The gauges that need the engine's state: called on the loop's thread."""
        engine = self._engine
        if engine is None:
            return
        self.owned.set(len(engine.stores))
        self.held.set(sum(len(store.held_workflows()) for store in engine.stores.values()))

    def on_stats(self, stats_json: str, positions: Mapping[int, int] | None = None) -> None:
        """librdkafka's stats_cb for the group consumer (served by its poll, on the loop's thread)."""
        self.lag.update(stats_json, positions)
        self.refresh()


class WorkerMetrics:
    """An activity worker's metrics, per activity type."""

    def __init__(self, running: Callable[[], int]) -> None:
        r = self.registry = CollectorRegistry()
        self._attempts = Counter("dp_activity_attempts", "Activity attempts started", ["activity"], registry=r)
        self._failures = Counter("dp_activity_failures", "Activity attempts that failed (raised, timed out, "
                                 "were canceled)", ["activity"], registry=r)
        self._seconds = Histogram("dp_activity_seconds", "How long one activity attempt ran", ["activity"],
                                  buckets=_ACTIVITY, registry=r)
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        self.lag = ConsumerLag(r)
        running_gauge = Gauge("dp_activities_running", "Activity attempts running now", registry=r)
        running_gauge.set_function(lambda: float(running()))

    def _of(self, activity_type: str) -> tuple[Any, Any, Any]:
        got = self._children.get(activity_type)
        if got is None:
            got = self._children[activity_type] = (self._attempts.labels(activity_type),
                                                   self._failures.labels(activity_type),
                                                   self._seconds.labels(activity_type))
        return got

    def started(self, activity_type: str) -> None:
        self._of(activity_type)[0].inc()

    def finished(self, activity_type: str, seconds: float | None, failed: bool) -> None:
        """An attempt ended; `seconds` None when it never ran (refused before it started)."""
        _, failures, hist = self._of(activity_type)
        if failed:
            failures.inc()
        if seconds is not None:
            hist.observe(seconds)

    def on_stats(self, stats_json: str) -> None:
        self.lag.update(stats_json, None)


class ConsumerLag:
    """`dp_consumer_lag{topic,partition}` from librdkafka's statistics: the last stable offset
    (read_committed) less the consumer's position -- this process's applied position where the
    caller gives one (a processor commits its offsets inside its transactions, which librdkafka's
    own committed offset does not see), else what librdkafka passed to the application."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge("dp_consumer_lag", "Records in the log not yet consumed, per assigned partition",
                           ["topic", "partition"], registry=registry)
        self._shown: set[tuple[str, str]] = set()

    def update(self, stats_json: str, positions: Mapping[int, int] | None) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        shown: set[tuple[str, str]] = set()
        for topic, t in (stats.get("topics") or {}).items():
            for p, part in (t.get("partitions") or {}).items():
                if p == "-1" or not part.get("desired"):
                    continue
                end = part.get("ls_offset", -1)
                if end is None or end < 0:
                    end = part.get("hi_offset", -1)
                at = positions.get(int(p)) if positions is not None else None
                if at is None:
                    at = part.get("app_offset", -1)
                if at is None or at < 0:
                    at = part.get("committed_offset", -1)
                if end < 0 or at is None or at < 0:
                    continue
                self.gauge.labels(topic, p).set(max(0, end - at))
                shown.add((topic, p))
        for gone in self._shown - shown:
            self.gauge.remove(*gone)
        self._shown = shown


class EngineCollector(Collector):
    """The engine's Counters and cache size, read when scraped (ints: reads are atomic)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        names = {f.name for f in fields(engine.counters)}
        if names != set(ENGINE_COUNTERS):
            raise AssertionError(f"ENGINE_COUNTERS and Counters differ: {sorted(names ^ set(ENGINE_COUNTERS))}")

    def collect(self) -> Iterator[Metric]:
        counters = self.engine.counters
        for name, doc in ENGINE_COUNTERS.items():
            family = CounterMetricFamily(f"dp_{name}", doc)
            family.add_metric([], getattr(counters, name))
            yield family
        cached = GaugeMetricFamily("dp_cached_workflows", "Workflow instances in the cache")
        cached.add_metric([], len(self.engine.cache))
        yield cached


def serve(registry: CollectorRegistry, port: int | None, addr: str, what: str) -> None:
    """Serve `registry` at http://addr:port/metrics on a daemon thread (no port: nothing)."""
    if port is None:
        return
    try:
        start_http_server(port, addr, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {addr}:{port} ({exc.strerror}): pass another --metrics-port "
                          "(DP_METRICS_PORT)") from None
    log.info("%s metrics on http://%s:%d/metrics", what, addr, port)
