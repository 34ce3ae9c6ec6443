"""History retention against the broker's disk: closed workflows tombstoned, compacted away, and
the events log's size under steady load.

    python -m benchmarks.retention [--closed 1000] [--running 20] [--retention-s 10]
                                   [--soak-s 600] [--rate 20] [--data-dir DIR]

Phase 1: `--closed` 3-activity workflows run to completion and `--running` wait on an hour-long
timer, with DP_RETENTION_S on the processor. It reports when every record of the closed ones is a
tombstone (wf.events read raw), then when compaction has removed them from the topic altogether
(records and tombstones: the topic is made with segment.ms=5000, min.cleanable.dirty.ratio=0.01,
delete.retention.ms=1000), and checks that every record of the running ones is still there.
Phase 2: `--rate` workflows a second for `--soak-s` seconds; every 30 s it prints the size on disk
of the events topic's partition directories (under the broker's log dir: `--data-dir`, default
the local broker's). Compare a run with `--retention-s 0` (retention off) to see the growth.
Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._procs import processor_and_worker, stop  # noqa: E402
from processor._kafka import local  # noqa: E402
from processor._kafka.topics import TopicNames, ensure_topics, load_specs  # noqa: E402
from processor.client import AsyncClient, Client  # noqa: E402
from tests.integration.test_retention import last_records  # noqa: E402

COMPACT_FAST = {"segment.ms": "5000", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000",
                "min.compaction.lag.ms": "0"}


def disk_bytes(data_dir: Path, topic: str) -> int:
    """Bytes the topic's partition directories take on disk (allocated blocks: Kafka's index files
    are preallocated sparse, 10 MB each by size)."""
    total = 0
    for part in data_dir.glob(f"{topic}-*"):
        total += sum(f.stat().st_blocks * 512 for f in part.iterdir() if f.is_file())
    return total


async def soak(bootstrap: str, prefix: str, rate: float, seconds: float, data_dir: Path | None, topic: str,
               partitions: int, closed: set[str], closed_at: float) -> None:
    client = AsyncClient(bootstrap, prefix=prefix)
    started, t0, next_report = 0, time.monotonic(), 0.0
    pending: set[asyncio.Task[object]] = set()

    async def one(i: int) -> None:
        await client.start_workflow("ThreeNoops", i, id=f"soak-{i}")
        await client.result(f"soak-{i}", timeout=600)

    gone = False
    while (elapsed := time.monotonic() - t0) < seconds:
        if elapsed >= next_report:
            size = f"{disk_bytes(data_dir, topic) / 1e6:.2f} MB" if data_dir is not None else "(no --data-dir)"
            left = "" if gone else f"; keys of the first {len(closed)} closed workflows still in the topic: "
            if not gone:
                remaining = sum(1 for k in last_records(bootstrap, topic, partitions)
                                if k.split(b"@")[0].decode() in closed)
                gone = remaining == 0
                left += str(remaining) + (f" (compacted away {time.monotonic() - closed_at:.0f} s after they closed)"
                                          if gone else "")
            print(f"soak t={elapsed:5.0f} s: {started} workflows started, {topic} on disk {size}{left}", flush=True)
            next_report += 30
        due = int(elapsed * rate)
        while started < due:
            task = asyncio.create_task(one(started))
            pending.add(task)
            task.add_done_callback(pending.discard)
            started += 1
        await asyncio.sleep(0.02)
    await asyncio.gather(*pending)
    size = f"{disk_bytes(data_dir, topic) / 1e6:.2f} MB" if data_dir is not None else "(no --data-dir)"
    print(f"soak end t={time.monotonic() - t0:5.0f} s: {started} workflows, {topic} on disk {size}", flush=True)
    await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--closed", type=int, default=1000)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--retention-s", type=float, default=10.0)
    ap.add_argument("--soak-s", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--data-dir", help="the broker's log dir (default: the local broker's)")
    args = ap.parse_args()

    if os.environ.get("KAFKA_BOOTSTRAP"):
        bootstrap = os.environ["KAFKA_BOOTSTRAP"]
        data_dir = Path(args.data_dir) if args.data_dir else None
    else:
        info = local.start()[0]
        bootstrap, data_dir = info.bootstrap, Path(args.data_dir) if args.data_dir else Path(info.home) / "data"
    prefix = f"ret{uuid.uuid4().hex[:8]}"
    topics = TopicNames(prefix)
    specs = [replace(s, configs={**s.configs, **COMPACT_FAST}) if s.name in (topics.events, topics.timers) else s
             for s in load_specs(prefix, args.partitions)]
    ensure_topics(bootstrap, specs)
    state = Path(tempfile.mkdtemp(prefix="dp-retention-"))
    env = {**os.environ, "DP_RETENTION_S": str(args.retention_s)}
    procs = processor_and_worker(bootstrap, prefix, state, env=env)
    try:
        with Client(bootstrap, prefix=prefix) as client:
            for i in range(args.running):
                client.start_workflow("Sleeper", 3600.0, id=f"running-{i}")
            for i in range(args.closed):
                client.start_workflow("ThreeNoops", i, id=f"closed-{i}", wait_for_ack=False)
            for i in range(args.closed):
                client.result(f"closed-{i}", timeout=600)
        closed_at = time.monotonic()
        closed = {f"closed-{i}" for i in range(args.closed)}
        running = {f"running-{i}" for i in range(args.running)}

        def ids(last: dict[bytes, bytes | None], which: set[str]) -> dict[bytes, bytes | None]:
            return {k: v for k, v in last.items() if k.split(b"@")[0].decode() in which}

        tombstoned_at = None
        while args.retention_s > 0 and tombstoned_at is None and time.monotonic() - closed_at < 600:
            mine = ids(last_records(bootstrap, topics.events, args.partitions), closed)
            if len({k.split(b"@")[0] for k in mine}) == args.closed and all(v is None for v in mine.values()):
                tombstoned_at = time.monotonic() - closed_at
                print(f"every record of the {args.closed} closed workflows tombstoned {tombstoned_at:.1f} s after "
                      f"the last closed ({len(mine)} keys; retention {args.retention_s:g} s)", flush=True)
            time.sleep(2)
        kept = ids(last_records(bootstrap, topics.events, args.partitions), running)
        print(f"running workflows: {len({k.split(b'@')[0] for k in kept})} of {args.running} with every record "
              f"kept ({len(kept)} records, {sum(v is None for v in kept.values())} tombstones)", flush=True)
        # Compaction cleans only closed segments: the soak's writes roll them (segment.ms=5000).
        asyncio.run(soak(bootstrap, prefix, args.rate, args.soak_s, data_dir, topics.events, args.partitions,
                         closed, closed_at))
    finally:
        stop(procs)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
