"""The processor's Prometheus metrics, read as a scrape would read them (processor/_metrics.py):
the engine's counts move with the work, timers' lateness is observed, held workflows are counted,
and the consumer lag comes from librdkafka's statistics and this process's own positions."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from engine_harness import EngineHarness
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processor._engine.core import Counters
from processor._metrics import ENGINE_COUNTERS, ProcessorMetrics, WorkerMetrics, serve
from processor.exceptions import ConfigError


def scrape(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):  # type: ignore[arg-type]
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_counter_is_scraped() -> None:
    from dataclasses import fields

    assert {f.name for f in fields(Counters)} == set(ENGINE_COUNTERS)


def test_the_engines_counts_and_timer_lateness_move_with_the_work(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    before = scrape(h.engine.metrics.registry)
    assert before[("dp_commands_total", ())] == 0
    assert before[("dp_timer_lateness_seconds_count", ())] == 0
    h.start("approve-1", "Approval", 1.5)
    h.tick(1_700)  # fires 200 ms after its due time
    h.signal("approve-1", "approve", "bob")
    assert h.result("approve-1") == "approved by bob after sleeping True"
    got = scrape(h.engine.metrics.registry)
    assert got[("dp_commands_total", ())] == 2  # the start and the signal
    assert got[("dp_events_total", ())] == len(h.events("approve-1"))
    assert got[("dp_timers_fired_total", ())] == 1
    assert got[("dp_timer_lateness_seconds_count", ())] == 1
    assert got[("dp_timer_lateness_seconds_sum", ())] == pytest.approx(0.2)
    assert got[("dp_timer_lateness_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("dp_timer_lateness_seconds_bucket", (("le", "0.1"),))] == 0
    assert got[("dp_cache_hits_total", ())] >= 2  # the timer and the signal found it cached
    assert got[("dp_cached_workflows", ())] == 1


def test_held_and_owned_are_refreshed_from_the_engine(tmp_path: Path) -> None:
    from test_engine_held import WID, GateV2, _started_with_v1

    now = _started_with_v1(tmp_path, fire_timer=False)
    h = EngineHarness(tmp_path, [GateV2], now_ms=now)
    h.engine.metrics.refresh()
    got = scrape(h.engine.metrics.registry)
    assert got[("dp_owned_partitions", ())] == len(h.engine.stores) > 0
    assert got[("dp_held_workflows", ())] == 0
    h.signal(WID, "open", "bob")  # the changed code fails to replay: held
    h.engine.metrics.refresh()
    assert scrape(h.engine.metrics.registry)[("dp_held_workflows", ())] == 1


def _stats(parts: dict[str, dict[str, object]]) -> str:
    return json.dumps({"topics": {"wf.commands": {"partitions": {"-1": {"desired": False}, **parts}}}})


def test_consumer_lag_is_the_stable_end_less_the_applied_position() -> None:
    m = ProcessorMetrics()
    m.on_stats(_stats({
        "0": {"desired": True, "ls_offset": 120, "hi_offset": 121, "app_offset": 90, "committed_offset": -1001},
        "1": {"desired": True, "ls_offset": 50, "hi_offset": 50, "app_offset": -1001, "committed_offset": 40},
        "2": {"desired": False, "ls_offset": 7, "app_offset": 0},
    }), positions={0: 100})
    got = scrape(m.registry)
    assert got[("dp_consumer_lag", (("partition", "0"), ("topic", "wf.commands")))] == 20  # our position wins
    assert got[("dp_consumer_lag", (("partition", "1"), ("topic", "wf.commands")))] == 10  # committed, no app
    assert ("dp_consumer_lag", (("partition", "2"), ("topic", "wf.commands"))) not in got  # not assigned
    m.on_stats(_stats({"1": {"desired": True, "ls_offset": 60, "app_offset": 60}}), positions={})
    got = scrape(m.registry)
    assert ("dp_consumer_lag", (("partition", "0"), ("topic", "wf.commands"))) not in got  # revoked: gone
    assert got[("dp_consumer_lag", (("partition", "1"), ("topic", "wf.commands")))] == 0
    m.on_stats("not json")  # librdkafka never sends that; ignored all the same


def test_worker_metrics_per_activity_type() -> None:
    running = [3]
    m = WorkerMetrics(lambda: running[0])
    m.started("charge")
    m.finished("charge", 0.02, failed=False)
    m.started("charge")
    m.finished("charge", 1.5, failed=True)
    m.finished("ship", None, failed=True)  # refused before it ran (not registered)
    got = scrape(m.registry)
    assert got[("dp_activity_attempts_total", (("activity", "charge"),))] == 2
    assert got[("dp_activity_failures_total", (("activity", "charge"),))] == 1
    assert got[("dp_activity_failures_total", (("activity", "ship"),))] == 1
    assert got[("dp_activity_seconds_count", (("activity", "charge"),))] == 2
    assert got[("dp_activity_seconds_sum", (("activity", "charge"),))] == pytest.approx(1.52)
    assert got[("dp_activities_running", ())] == 3


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
            serve(ProcessorMetrics().registry, port, "127.0.0.1", "processor")


def test_the_grafana_dashboard_names_only_metrics_that_exist(tmp_path: Path) -> None:
    """docs/grafana/durable-processor.json: every dp_* series its queries read is one a processor
    or a worker exposes (a renamed metric breaks this test, not an operator's dashboard)."""
    import re

    dashboard = json.loads((Path(__file__).parents[3] / "docs/grafana/durable-processor.json").read_text())
    used = {name for panel in dashboard["panels"] for t in panel["targets"]
            for name in re.findall(r"\bdp_[a-z_]+", t["expr"])}
    h = EngineHarness(tmp_path)
    h.engine.metrics.lag.gauge.labels("t", "0").set(1)
    worker = WorkerMetrics(lambda: 0)
    worker.started("x")
    worker.finished("x", 0.1, failed=True)
    exposed = {name for name, _ in {**scrape(h.engine.metrics.registry), **scrape(worker.registry)}}
    assert len(used) >= 15
    assert used <= exposed, sorted(used - exposed)
