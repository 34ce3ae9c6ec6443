"""Prometheus metrics on a real broker and real processes (issue 10 item 5): `processor run
--metrics-port P` serves processor 0 on P and worker 0 on P+1; a scrape while workflows run shows
the engine's counts, the transaction phases, timer lateness, restore, consumer lag per partition,
owned partitions, DLQ records and the worker's attempts per activity type, and they move."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from processor._kafka.topics import TopicNames
from processor.client import Client
from tests.dp_harness import Cluster, wait_for
from tests.integration.test_visibility import _free_port

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # noqa: S310 - loopback
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(port: int, name: str, **labels: str) -> float:
    """The sample's value; -1 when it is not there (yet), or nothing listens (yet)."""
    try:
        got = scrape(port)
    except OSError:
        return -1.0
    return got.get((name, tuple(sorted(labels.items()))), -1.0)


def _two_free_ports() -> int:
    while True:
        base = _free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
                return base
            except OSError:
                continue


def test_metrics_of_a_running_processor_and_worker(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4)
    base = _two_free_ports()
    processor, worker = base, base + 1
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.supervisor(processors=1, workers=1, extra=["--metrics-port", str(base)])
        wait_for(lambda: value(processor, "dp_owned_partitions") == 4, 120, interval=0.5,
                 message="the processor serves metrics and owns the 4 partitions")
        assert value(processor, "dp_restore_seconds_count") >= 1
        assert value(processor, "dp_commands_total") == 0

        ids = [f"m-{i}" for i in range(8)]
        for i, wid in enumerate(ids):
            client.start_workflow("ThreeSteps", i, id=wid)
        client.start_workflow("Approval", 0.5, id="m-timer")
        for i, wid in enumerate(ids):
            assert client.result(wid, timeout=120) == [i + 1, i + 2, i + 3]
        client.signal("m-timer", "approve", "ops")
        assert client.result("m-timer", timeout=120) == "approved by ops after sleeping True"

        p = scrape(processor)
        # 9 starts, 24 activity results, 1 signal (and the activities' start reports, if any)
        assert p[("dp_commands_total", ())] >= 34
        assert p[("dp_events_total", ())] > p[("dp_commands_total", ())]
        assert p[("dp_transaction_seconds_count", ())] >= 1
        for phase in ("apply", "send_offsets", "commit", "rocksdb"):
            assert p[("dp_transaction_phase_seconds_count", (("phase", phase),))] == \
                p[("dp_transaction_seconds_count", ())]
        assert p[("dp_transaction_commands_sum", ())] == p[("dp_commands_total", ())] + p[("dp_duplicates_total", ())]
        assert p[("dp_timer_lateness_seconds_count", ())] >= 1  # the Approval's sleep
        assert 0 <= p[("dp_timer_lateness_seconds_sum", ())] < 30
        assert p[("dp_cache_hits_total", ())] >= 24  # each result found its workflow cached
        assert p[("dp_held_workflows", ())] == 0

        w = scrape(worker)
        assert w[("dp_activity_attempts_total", (("activity", "step"),))] == 24
        assert w[("dp_activity_seconds_count", (("activity", "step"),))] == 24
        assert w.get(("dp_activity_failures_total", (("activity", "step"),)), 0) == 0
        assert w[("dp_activities_running", ())] == 0

        # Lag per partition, from librdkafka's statistics (every 5 s): all of it applied by now.
        commands = TopicNames(prefix).commands

        def lag_known() -> bool:
            got = scrape(processor)
            lags = {labels: v for (name, labels), v in got.items() if name == "dp_consumer_lag"}
            return len(lags) == 4 and all(dict(k)["topic"] == commands for k in lags) and set(lags.values()) == {0}

        wait_for(lag_known, 60, interval=0.5, message="consumer lag 0 on each of the 4 partitions")
        wait_for(lambda: any(name == "dp_consumer_lag" and dict(labels)["topic"] == TopicNames(prefix).tasks("default")
                             for (name, labels) in scrape(worker)), 60, interval=0.5,
                 message="the worker's task topic lag")

        # A record nobody can read goes to the DLQ, counted; the counts keep moving.
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(commands, b"not an avro record", key=b"m-junk")
        producer.flush(10)
        wait_for(lambda: value(processor, "dp_dlq_total") == 1, 60, message="the junk record dead-lettered")
        before = value(processor, "dp_commands_total")
        client.start_workflow("ThreeSteps", 100, id="m-more")
        assert client.result("m-more", timeout=120) == [101, 102, 103]
        assert value(processor, "dp_commands_total") >= before + 4
        assert value(worker, "dp_activity_attempts_total", activity="step") == 27
    finally:
        client.close()
        c.close()
