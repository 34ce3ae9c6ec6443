"""The visibility service at 10,000 workflows of 20 types with search attributes.

    python -m benchmarks.visibility [--workflows 10000] [--repeat 20]

Runs the workflows (one processor, one worker, `processor ui`), waits until the projection counts
them all, then for each of a set of list queries: checks the ids listed (every page) against the
set the benchmark itself started, and times the first page (page_size 100) and the count,
`--repeat` times each (p50 / p99). Then it stops `processor ui` and starts another on an empty
state dir, and times until it gives the same answers (faust restores its tables from their
changelog topics): the rebuild rate is the projection's events over that time.
Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._procs import processor_and_worker, stop  # noqa: E402
from processor._kafka import local  # noqa: E402
from processor._kafka.topics import ensure_topics, load_specs  # noqa: E402
from processor._visibility.http import VisibilityClient  # noqa: E402
from processor.client import AsyncClient  # noqa: E402

REGIONS = ["eu", "us", "ap", "sa", "af"]


def attributes(i: int) -> dict[str, Any]:
    rnd = random.Random(i)
    return {"CustomerId": f"c{rnd.randrange(100)}", "Amount": rnd.randrange(1000), "Region": rnd.choice(REGIONS),
            "Tags": ["vip"] if rnd.random() < 0.1 else ["std"]}


QUERIES: list[tuple[str, Any]] = [
    ("WorkflowType = 'Kind07'", lambda t, a: t == "Kind07"),
    ("CustomerId = 'c42'", lambda t, a: a["CustomerId"] == "c42"),
    ("WorkflowType = 'Kind03' AND Region = 'eu' AND Amount >= 500",
     lambda t, a: t == "Kind03" and a["Region"] == "eu" and a["Amount"] >= 500),
    ("Region IN ('us', 'ap') AND Tags = 'vip' ORDER BY Amount DESC",
     lambda t, a: a["Region"] in ("us", "ap") and "vip" in a["Tags"]),
    ("ExecutionStatus = 'Completed' AND Amount BETWEEN 100 AND 200", lambda t, a: 100 <= a["Amount"] <= 200),
    ("NOT (Region = 'eu') AND CustomerId STARTS_WITH 'c9'",
     lambda t, a: a["Region"] != "eu" and a["CustomerId"].startswith("c9")),
]


async def run_all(bootstrap: str, prefix: str, n: int, concurrency: int) -> float:
    client = AsyncClient(bootstrap, prefix=prefix)
    queue = list(range(n))

    async def runner() -> None:
        while queue:
            i = queue.pop()
            await client.start_workflow(f"Kind{i % 20:02d}", i, id=f"v-{i:05d}", search_attributes=attributes(i))
            await client.result(f"v-{i:05d}", timeout=600)

    t0 = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    await client.close()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ui(bootstrap: str, prefix: str, port: int, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "processor.cli", "ui", "--bootstrap", bootstrap, "--prefix",
                             prefix, "--port", str(port), "--state-dir", str(state)], cwd=REPO)


def wait(predicate: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if predicate():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not serving yet
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or local.start()[0].bootstrap
    prefix = f"vis{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, load_specs(prefix, args.partitions))
    root = Path(tempfile.mkdtemp(prefix="dp-vis-"))
    procs = processor_and_worker(bootstrap, prefix, root / "s")
    port = free_port()
    vis = VisibilityClient(f"http://127.0.0.1:{port}")
    first = ui(bootstrap, prefix, port, root / "vis-a")
    procs.append(first)
    try:
        elapsed = asyncio.run(run_all(bootstrap, prefix, args.workflows, args.concurrency))
        lag = wait(lambda: vis.count()["count"] == args.workflows, 600)
        print(f"{args.workflows} workflows of 20 types in {elapsed:.1f} s; projected {lag:.2f} s after the last "
              f"result", flush=True)
        started = {f"v-{i:05d}": (f"Kind{i % 20:02d}", attributes(i)) for i in range(args.workflows)}
        answers = {}
        for query, matches in QUERIES:
            want = {wid for wid, (t, a) in started.items() if matches(t, a)}
            got = [w["workflow_id"] for w in vis.rows(query, page_size=1000)]
            assert len(got) == len(set(got)) and set(got) == want, f"{query}: {len(got)} listed, {len(want)} expected"
            answers[query] = got
            page50, page99 = p50_p99(lambda q=query: vis.page(q, page_size=100), args.repeat)
            count50, count99 = p50_p99(lambda q=query: vis.count(q), args.repeat)
            print(f"{len(want):5d} match  list p50 {page50:7.1f} ms  p99 {page99:7.1f} ms | count p50 {count50:7.1f} "
                  f"ms  p99 {count99:7.1f} ms | {query}", flush=True)
        status = vis.status()
        first.send_signal(signal.SIGTERM)
        first.wait(60)
        procs.append(ui(bootstrap, prefix, port, root / "vis-fresh"))
        t0 = time.monotonic()
        wait(lambda: all([w["workflow_id"] for w in vis.rows(q, page_size=1000)] == a for q, a in answers.items()),
             900)
        rebuild = time.monotonic() - t0
        events = status["events_applied"]
        print(f"rebuild on an empty state dir: the same answers after {rebuild:.1f} s (process start, group join, "
              f"changelog restore); {events} events projected -> {events / rebuild:.0f} events/s", flush=True)
    finally:
        stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def p50_p99(fn: Any, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]


if __name__ == "__main__":
    main()
