"""End-to-end latency and throughput of 3-activity workflows through real processes.

    python benchmarks/e2e.py [--latency-runs 200] [--throughput-runs 2000] [--concurrency 100]
                             [--processors 1] [--workers 1] [--partitions 8]

Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local broker of `processor kafka start`.
Each run uses a fresh topic prefix. Processor and worker are separate processes started as
`processor run --role ...`; the client is this process. Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processor._kafka import local  # noqa: E402
from processor._kafka.topics import ensure_topics, load_specs  # noqa: E402
from processor.client import AsyncClient, Client  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(bootstrap: str, prefix: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` asyncio tasks, each starting a workflow and awaiting its result, until n ran."""
    client = AsyncClient(bootstrap, prefix=prefix)
    queue = list(range(n))
    latencies: list[float] = []

    async def runner() -> None:
        while queue:
            i = queue.pop()
            wid = f"thr-{i}"
            t0 = time.perf_counter()
            await client.start_workflow("ThreeNoops", i, id=wid)
            assert await client.result(wid, timeout=300) == i + 3
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return elapsed, latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--throughput-runs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--processors", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=8)
    args = ap.parse_args()

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or local.start()[0].bootstrap
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, load_specs(prefix, args.partitions))
    state = Path(tempfile.mkdtemp(prefix="dp-bench-"))
    procs = []
    for role, n in (("processor", args.processors), ("worker", args.workers)):
        for i in range(n):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "run", "--app", "benchmarks.app:app", "--role", role,
                 "--index", str(i), "--bootstrap", bootstrap, "--prefix", prefix, "--state-dir", str(state)],
                cwd=REPO))
    client = Client(bootstrap, prefix=prefix)
    try:
        # Warm-up: group joins, partition assignment, first transactions.
        for i in range(5):
            client.start_workflow("ThreeNoops", i, id=f"warm-{i}")
            client.result(f"warm-{i}", timeout=120)

        latencies = []
        for i in range(args.latency_runs):
            wid = f"lat-{i}"
            client.watch(wid)
            t0 = time.perf_counter()
            client.start_workflow("ThreeNoops", i, id=wid)
            assert client.result(wid, timeout=60) == i + 3
            latencies.append((time.perf_counter() - t0) * 1000)
        print(f"latency, 3-activity workflow, concurrency 1, {len(latencies)} runs: "
              f"p50 {percentile(latencies, 0.50):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
              f"mean {statistics.mean(latencies):.1f} ms, max {max(latencies):.1f} ms", flush=True)

        n, conc = args.throughput_runs, args.concurrency
        elapsed, done_lat = asyncio.run(throughput(bootstrap, prefix, n, conc))
        print(f"throughput, {n} workflows at concurrency {conc}: {n / elapsed:.1f} workflows/s "
              f"({elapsed:.1f} s; per-workflow p50 {percentile(done_lat, 0.5):.0f} ms, "
              f"p99 {percentile(done_lat, 0.99):.0f} ms); processors={args.processors} workers={args.workers} "
              f"partitions={args.partitions}", flush=True)
    finally:
        client.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
