"""`python -m benchmarks --smoke` (issue 12 item 1): the one benchmark command runs every scenario
small against the real broker, prints its table, and writes the figures and the plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dp_harness import REPO

pytestmark = pytest.mark.integration


def test_the_benchmark_command_runs_every_scenario(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)], cwd=REPO,
                         env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap}, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    sc = results["scenarios"]
    assert set(sc) == {"latency", "throughput", "timers", "restore", "failover"}
    assert sc["latency"]["runs"] == 20 and 0 < sc["latency"]["p50_ms"] <= sc["latency"]["p99_ms"]
    assert sc["throughput"]["16"]["per_s"] > 0 and len(sc["throughput"]["16"]["completed_at_s"]) == 200
    assert sc["timers"]["workflows"] == len(sc["timers"]["wake_samples_ms"]) == 100
    assert sc["timers"]["fire_histories"] == len(sc["timers"]["fire_samples_ms"]) == 100
    assert min(sc["timers"]["fire_samples_ms"]) >= 0, "no timer fires before it is due"
    assert min(sc["timers"]["wake_samples_ms"]) > 0, "no workflow ends before its 1 s sleep"
    assert sc["restore"]["records"] > 0 and sc["restore"]["per_s"] > 0
    assert {sc["failover"][m]["runs"] for m in ("restart", "takeover")} == {1}
    assert "exactly-once" in results["env"]["durability"] and "fsync" in results["env"]["durability"]
    assert results["load_average"]["latency"]["before"] >= 0
    for png in ("latency_cdf.png", "throughput.png", "timer_lateness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "failover (takeover)" in run.stdout and "throughput, concurrency 16" in run.stdout
