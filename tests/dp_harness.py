"""Real processes for integration and chaos tests: processors and workers started exactly as a
user runs them (`processor run --role ...`), killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor._app import running_child
from processor._codec import default_codec
from processor._kafka.messages import high_watermarks
from processor._kafka.topics import ensure_topics, load_specs

REPO = Path(__file__).resolve().parent.parent


class Cluster:
    def __init__(self, bootstrap: str, prefix: str, root: Path, app: str = "tests.apps.basic:app",
                 partitions: int = 4, env: dict[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.root = root
        self.app = app
        self.state = root / "state"
        self.run_log = root / "runs.log"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "DP_TEST_RUN_LOG": str(self.run_log), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        ensure_topics(bootstrap, load_specs(prefix, partitions))

    def _spawn(self, role: str, index: int, app: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "processor.cli", "run", "--app", app or self.app, "--role", role,
                "--index", str(index), "--bootstrap", self.bootstrap, "--prefix", self.prefix,
                "--state-dir", str(self.state), "-v"]
        log = open(self.logs / f"{role}-{index}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, cwd=REPO, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def processor(self, index: int = 0, app: str | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self._spawn("processor", index, app, env)

    def supervisor(self, processors: int = 1, workers: int = 1, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """`processor run` as a user runs it: one supervisor that starts and watches its children;
        `extra`: more of its options."""
        argv = [sys.executable, "-m", "processor.cli", "run", "--app", self.app, "--processors", str(processors),
                "--workers", str(workers), "--bootstrap", self.bootstrap, "--prefix", self.prefix,
                "--state-dir", str(self.state), "-v", *extra]
        log = open(self.logs / "supervisor.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def child_pid(self, role: str, index: int) -> int | None:
        """The pid of the live `--role role --index index` process of this cluster (a supervisor's child)."""
        return running_child(self.state, role, index)

    def worker(self, index: int = 0, app: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self._spawn("worker", index, app, env)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.stop(p)

    def log_text(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-4000:]}" for f in sorted(self.logs.iterdir()))

    def runs(self) -> list[tuple[str, int, int]]:
        if not self.run_log.exists():
            return []
        out = []
        for line in self.run_log.read_text().splitlines():
            wid, seq, attempt, _ = line.split(" ", 3)
            out.append((wid, int(seq), int(attempt)))
        return out


def read_all(bootstrap: str, topic: str, *, decode: bool = True,
             timeout: float = 60) -> list[tuple[bytes | None, Any, list[tuple[str, bytes]]]]:
    """Every committed record of every partition of `topic`, up to the end offsets seen at the start."""
    return [(k, v, h) for _, k, v, h in _read(bootstrap, topic, decode, timeout)]


def live_records(bootstrap: str, topic: str, *, timeout: float = 60) -> dict[int, dict[bytes, Any]]:
    """What a compacted topic holds once compaction has run: per partition, each key's last value
    (decoded), keys whose last record is a tombstone left out. Keys that start with NUL (the
    engine's hand-off state in wf.events, not records of the protocol) keep their raw bytes."""
    live: dict[int, dict[bytes, Any]] = {}
    for partition, key, value, _ in _read(bootstrap, topic, True, timeout):
        part = live.setdefault(partition, {})
        if key is None:
            continue
        if value is None:
            part.pop(key, None)
        else:
            part[key] = value
    return live


def _read(bootstrap: str, topic: str, decode: bool,
          timeout: float) -> list[tuple[int, bytes | None, Any, list[tuple[str, bytes]]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    codec = default_codec()
    try:
        md = c.list_topics(topic, timeout=30)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        # High watermarks: reading up to them waits for transactions still open (a killed
        # processor's, until the broker aborts it), so the reader sees the final state.
        ends = {p: high for (_, p), high in high_watermarks(bootstrap, parts).items()}
        c.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
        out: list[tuple[int, bytes | None, Any, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in c.position(parts)}
            if all(positions[p] >= ends[p] for p in ends if ends[p] > 0):
                break
            for m in c.consume(1000, timeout=0.2):
                if m.error() is not None:
                    continue
                value = m.value()
                if decode and value is not None and not (m.key() or b"").startswith(b"\x00"):
                    value = codec.decode_typed(value)
                out.append((m.partition(), m.key(), value, list(m.headers() or [])))
        return out
    finally:
        c.close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


def group_owned(bootstrap: str, group: str) -> set[int]:
    """The partitions the members of `group` own now, as its coordinator describes them."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(15)
    return {tp.partition for m in desc.members for tp in (m.assignment.topic_partitions if m.assignment else [])}
