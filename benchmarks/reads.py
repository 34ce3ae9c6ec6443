"""describe / history / result of one workflow in a partition holding much history, read the old
way (the partition scanned from offset 0) and the new way (the owning processor's built-in
__history query; the completion watcher from the partition's end), on the same data.

    python -m benchmarks.reads [--workflows 25000] [--repeat 5] [--concurrency 200]

One partition, one processor, one worker. It first runs `--workflows` 3-activity workflows (8
events each: 25,000 make 200,000 events) through one AsyncClient, and reports that client's RSS
before and after (the completion cache is bounded). Then, for a workflow in the middle of the
partition and for the last one, it times each read `--repeat` times, each with a new Client (as a
CLI call would), and prints the median and the worst.

"before" is what the code did until this change, measured with the code kept for it:
`Client.history_from_log` (history, and describe = summarize of it), and for result a consumer
reading the completions partition from offset 0 until the workflow's completion (what the watcher
did). "after" is `Client.history`, `Client.describe`, `Client.result`.
Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402

from benchmarks._procs import processor_and_worker, stop  # noqa: E402
from processor._answers import summarize  # noqa: E402
from processor._kafka import local  # noqa: E402
from processor._kafka.messages import high_watermarks  # noqa: E402
from processor._kafka.topics import TopicNames, ensure_topics, load_specs  # noqa: E402
from processor.client import AsyncClient, Client  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fill(bootstrap: str, prefix: str, n: int, concurrency: int) -> tuple[float, float, float]:
    client = AsyncClient(bootstrap, prefix=prefix)
    queue = list(range(n))
    before = rss_mb()

    done = 0

    async def runner() -> None:
        nonlocal done
        while queue:
            i = queue.pop()
            await client.start_workflow("ThreeNoops", i, id=f"w-{i:06d}")
            assert await client.result(f"w-{i:06d}", timeout=600) == i + 3
            done += 1
            if done % max(1, n // 4) == 0:
                print(f"  the filling client's RSS after {done} completions: {rss_mb():.0f} MB", flush=True)

    t0 = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    after = rss_mb()
    await client.close()
    return elapsed, before, after


def result_by_scan(bootstrap: str, prefix: str, wid: str) -> Any:
    """What the completion watcher did before: read the partition from offset 0 until the id."""
    topics = TopicNames(prefix)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}.bench-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topics.completions, 0, OFFSET_BEGINNING)])
        while True:
            for m in consumer.consume(1000, timeout=1.0):
                if m.error() is None and m.key() == wid.encode():
                    return m.value()
    finally:
        consumer.close()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def measure(bootstrap: str, prefix: str, wid: str, repeat: int) -> list[tuple[str, tuple[float, float],
                                                                                  tuple[float, float]]]:
    def fresh(fn: Callable[[Client], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with Client(bootstrap, prefix=prefix) as c:
                return fn(c)
        return run

    want = [e["type"] for e in fresh(lambda c: c.history(wid))()]
    assert want and [e["type"] for e in fresh(lambda c: c.history_from_log(wid, timeout=600))()] == want
    return [
        ("history", timed(fresh(lambda c: c.history_from_log(wid, timeout=600)), repeat),
         timed(fresh(lambda c: c.history(wid)), repeat)),
        ("describe", timed(fresh(lambda c: summarize(c.history_from_log(wid, timeout=600))), repeat),
         timed(fresh(lambda c: c.describe(wid)), repeat)),
        ("result", timed(lambda: result_by_scan(bootstrap, prefix, wid), repeat),
         timed(fresh(lambda c: c.result(wid, timeout=600)), repeat)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflows", type=int, default=25_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=200)
    args = ap.parse_args()

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or local.start()[0].bootstrap
    prefix = f"reads{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, load_specs(prefix, 1))
    state = Path(tempfile.mkdtemp(prefix="dp-reads-"))
    procs = processor_and_worker(bootstrap, prefix, state)
    try:
        elapsed, rss0, rss1 = asyncio.run(fill(bootstrap, prefix, args.workflows, args.concurrency))
        topics = TopicNames(prefix)
        ends = high_watermarks(bootstrap, [TopicPartition(topics.events, 0), TopicPartition(topics.completions, 0)])
        print(f"filled: {args.workflows} workflows in {elapsed:.1f} s ({args.workflows / elapsed:.0f}/s); "
              f"{topics.events}[0] ends at offset {ends[(topics.events, 0)]} (events and transaction markers), "
              f"{topics.completions}[0] at {ends[(topics.completions, 0)]}; the filling client's RSS "
              f"{rss0:.0f} MB before, {rss1:.0f} MB after {args.workflows} completions", flush=True)
        for wid in (f"w-{args.workflows // 2:06d}", f"w-{0:06d}"):  # the queue pops from the end: w-000000 ran last
            for name, (b50, bmax), (a50, amax) in measure(bootstrap, prefix, wid, args.repeat):
                print(f"{wid} {name:8}: before (scan from offset 0) median {b50:8.1f} ms, max {bmax:8.1f} ms | "
                      f"after median {a50:7.1f} ms, max {amax:7.1f} ms  (each with a new Client, "
                      f"{args.repeat} runs)", flush=True)
    finally:
        stop(procs)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
