"""Declared topics (topics/topics.toml): load, create idempotently, verify, describe."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from processor._resources import topics_dir
from processor.exceptions import KafkaUnavailableError, TopicMismatchError

DEFAULT_PREFIX = "wf"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    co_partitioned: bool = False


@dataclass(frozen=True)
class TopicNames:
    """The concrete topic names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def timers(self) -> str:
        return f"{self.prefix}.timers"

    @property
    def completions(self) -> str:
        return f"{self.prefix}.completions"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def tasks(self, queue: str) -> str:
        return f"{self.prefix}.tasks.{queue}"


def _declaration(path: Path | None) -> dict[str, Any]:
    path = path or topics_dir() / "topics.toml"
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_specs(
    prefix: str = DEFAULT_PREFIX, partitions: int | None = None, path: Path | None = None
) -> list[TopicSpec]:
    """Every declared topic under `prefix`; `partitions` overrides the declared default count."""
    decl = _declaration(path)
    defaults = decl.get("defaults", {})
    count = partitions or int(defaults.get("partitions", 8))
    rf = int(defaults.get("replication_factor", 1))
    specs = []
    for name, body in decl.get("topics", {}).items():
        configs = {k: str(v) for k, v in body.items() if "." in k}
        specs.append(
            TopicSpec(f"{prefix}.{name}", int(body.get("partitions", count)), rf, configs,
                      bool(body.get("co_partitioned", False)))
        )
    queues = decl.get("task_queues", {})
    specs.extend(task_queue_spec(queue, prefix, count, path) for queue in queues.get("queues", []))
    return specs


def task_queue_spec(
    queue: str, prefix: str = DEFAULT_PREFIX, partitions: int | None = None, path: Path | None = None
) -> TopicSpec:
    decl = _declaration(path)
    body = decl.get("task_queues", {})
    defaults = decl.get("defaults", {})
    configs = {k: str(v) for k, v in body.items() if "." in k}
    count = partitions or int(defaults.get("partitions", 8))
    return TopicSpec(TopicNames(prefix).tasks(queue), count, int(defaults.get("replication_factor", 1)), configs)


def admin_client(bootstrap: str) -> AdminClient:
    # log_level 4: librdkafka's info lines (e.g. "Purging unserved events" on close) are noise here.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})


def _live_partitions(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot list topics: {exc.args[0]}") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def live_configs(admin: AdminClient, names: Iterable[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    if not resources:
        return {}
    out: dict[str, dict[str, str]] = {}
    for res, fut in admin.describe_configs(resources).items():
        entries = fut.result(timeout=10)
        out[res.name] = {k: v.value for k, v in entries.items()}
    return out


def ensure_topics(bootstrap: str, specs: list[TopicSpec], *, exact_partitions: bool = True) -> list[str]:
    """Create the missing topics; verify the existing ones. Returns the names created.

    Raises TopicMismatchError, naming topic and difference, if an existing topic's cleanup.policy
    disagrees with its declaration, co-partitioned topics differ in partition count, or (with
    `exact_partitions`, what `processor topics create` uses) the partition count differs from the
    declared one. Processes that merely run on existing topics pass exact_partitions=False: the
    live count is the truth once topics exist.
    """
    admin = admin_client(bootstrap)
    live = _live_partitions(admin)
    missing = [s for s in specs if s.name not in live]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.configs) for s in missing],
            operation_timeout=30,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=60)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: verify below
                    raise KafkaUnavailableError(f"creating topic {name} failed: {exc.args[0]}") from exc
        live = _live_partitions(admin)
    verify(admin, specs, live, exact_partitions=exact_partitions)
    return created


def verify(admin: AdminClient, specs: list[TopicSpec], live: dict[str, int] | None = None, *,
           exact_partitions: bool = True) -> None:
    live = live if live is not None else _live_partitions(admin)
    problems = []
    existing = [s for s in specs if s.name in live]
    configs = live_configs(admin, [s.name for s in existing])
    for s in existing:
        if exact_partitions and live[s.name] != s.partitions:
            problems.append(f"{s.name} has {live[s.name]} partitions, declared {s.partitions}")
        want = s.configs.get("cleanup.policy")
        have = configs.get(s.name, {}).get("cleanup.policy")
        if want is not None and have != want:
            problems.append(f"{s.name} has cleanup.policy={have}, declared {want}")
    co = {live[s.name] for s in existing if s.co_partitioned}
    if len(co) > 1:
        problems.append(
            "co-partitioned topics (" + ", ".join(s.name for s in existing if s.co_partitioned)
            + f") have different partition counts {sorted(co)}; they must match"
        )
    if problems:
        raise TopicMismatchError(
            "existing topics disagree with topics/topics.toml: " + "; ".join(problems)
            + ". Use another --prefix, or pass --partitions equal to the live count."
        )


def describe(bootstrap: str, specs: list[TopicSpec]) -> list[dict[str, Any]]:
    """One row per declared topic: declared vs live partitions and configs."""
    admin = admin_client(bootstrap)
    live = _live_partitions(admin)
    configs = live_configs(admin, [s.name for s in specs if s.name in live])
    rows = []
    for s in specs:
        have = configs.get(s.name, {})
        rows.append(
            {
                "topic": s.name,
                "exists": s.name in live,
                "partitions": (s.partitions, live.get(s.name)),
                "configs": {k: (v, have.get(k)) for k, v in s.configs.items()},
            }
        )
    return rows
