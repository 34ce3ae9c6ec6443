"""Declared topics (topics/topics.toml): load, create idempotently, verify, describe; and the
probe that tells a user at once that no broker answers."""

from __future__ import annotations

import logging
import os
import socket
import time
import tomllib
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from processor._kafka.config import client_config
from processor._resources import topics_dir
from processor.exceptions import ConfigError, KafkaUnavailableError, TopicMismatchError

DEFAULT_PREFIX = "wf"
VISIBLE_WITHIN_S = 30.0  # how long created topics may take to show in the broker's metadata
REACH_TIMEOUT_S = 8.0  # how long `require_reachable` waits for a broker's answer


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int | None  # None: by the cluster's size (replication(), when created)
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
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def completions(self) -> str:
        return f"{self.prefix}.completions"

    @property
    def replies(self) -> str:
        return f"{self.prefix}.replies"

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
    rf = _declared_rf(defaults)
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
    return TopicSpec(TopicNames(prefix).tasks(queue), count, _declared_rf(defaults), configs)


def _declared_rf(defaults: dict[str, Any]) -> int | None:
    raw = defaults.get("replication_factor", "auto")
    return None if raw == "auto" else int(raw)


def replication(brokers: int, declared: int | None = None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a topic created now: DP_REPLICATION_FACTOR /
    DP_MIN_INSYNC_REPLICAS if set, else the declaration, else by the cluster's size -- 3 copies
    and 2 in sync where there are 3 brokers or more, else one copy per broker and 1 in sync."""
    env_rf, env_isr = os.environ.get("DP_REPLICATION_FACTOR"), os.environ.get("DP_MIN_INSYNC_REPLICAS")
    try:
        rf = int(env_rf) if env_rf else declared or min(3, max(1, brokers))
        isr = int(env_isr) if env_isr else (2 if rf >= 3 else 1)
    except ValueError:
        raise ConfigError("DP_REPLICATION_FACTOR and DP_MIN_INSYNC_REPLICAS must be whole numbers") from None
    if rf > brokers:
        raise ConfigError(f"replication factor {rf} needs {rf} brokers; the cluster has {brokers} (set "
                          "DP_REPLICATION_FACTOR or --replication-factor)")
    if not 1 <= isr <= rf:
        raise ConfigError(f"min.insync.replicas {isr} must be between 1 and the replication factor {rf}")
    return rf, isr


def creation(spec: TopicSpec, brokers: int) -> tuple[int, dict[str, str]]:
    """(replication factor, configs) of `spec` created now on a cluster of `brokers`."""
    rf, isr = replication(brokers, spec.replication_factor)
    return rf, {"min.insync.replicas": str(isr), **spec.configs}


def may_create() -> bool:
    """False where only administrators create topics (DP_NO_CREATE=1, `--no-create`)."""
    return os.environ.get("DP_NO_CREATE", "") not in ("1", "true", "yes")


def admin_client(bootstrap: str) -> AdminClient:
    # log_level 4: librdkafka's info lines (e.g. "Purging unserved events" on close) are noise here.
    return AdminClient(client_config("admin", bootstrap, "admin", {"log_level": 4}))


_SUFFIXES = (".commands", ".events", ".timers", ".control", ".completions", ".replies", ".dlq")


def prefix_of(topic: str) -> str:
    """The prefix of one of our topic names (`<prefix>.events`, `<prefix>.tasks.<queue>`): the
    group ids of helper consumers go under it, where a cluster's ACLs expect them."""
    for suffix in _SUFFIXES:
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    head, sep, _ = topic.rpartition(".tasks.")
    return head if sep else topic


class AdminPort(Protocol):
    """The part of confluent_kafka's AdminClient this module uses; tests/unit/test_topics.py has
    an in-memory twin of it that can lag the way a loaded broker's metadata does."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any: ...

    def create_topics(self, new_topics: list[NewTopic], **kwargs: Any) -> dict[str, Future[Any]]: ...

    def describe_configs(self, resources: list[ConfigResource], **kwargs: Any) -> dict[ConfigResource, Future[Any]]: ...


def unreachable_message(bootstrap: str, detail: str = "") -> str:
    why = f": {detail}" if detail else ""
    return (f"cannot reach Kafka at {bootstrap}{why} (is it running? `processor kafka start`, "
            "or set --bootstrap/KAFKA_BOOTSTRAP)")


def require_reachable(bootstrap: str, timeout: float = REACH_TIMEOUT_S) -> set[str]:
    """The names of the topics a Kafka broker at `bootstrap` lists; KafkaUnavailableError, in
    seconds and without librdkafka's log lines, when none answers.

    Why a probe of its own: a librdkafka client pointed at nothing retries for as long as its
    caller waits (30 s and more) and prints a line per failed connect. A refused TCP connect is
    known at once, so that is tried first; a port that accepts but does not answer Kafka's
    metadata request fails after `timeout`.
    """
    addresses = _addresses(bootstrap)
    failures = [f for f in (_tcp_failure(host, port, min(2.0, timeout)) for host, port in addresses) if f]
    if addresses and len(failures) == len(addresses):
        raise KafkaUnavailableError(unreachable_message(bootstrap, "; ".join(failures)))
    errors: list[str] = []
    conf = client_config("admin", bootstrap, "probe", {"logger": _silent_logger(), "log_level": 0,
                                                      "socket.connection.setup.timeout.ms": int(timeout * 1000),
                                                      "error_cb": lambda err: errors.append(err.str())})
    admin = AdminClient(conf)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException:
        admin.poll(0)
        raise KafkaUnavailableError(_refusal(bootstrap, conf, errors, timeout)) from None
    if not md.brokers:
        raise KafkaUnavailableError(unreachable_message(bootstrap, "the cluster reports no brokers"))
    return {name for name, t in md.topics.items() if t.error is None}


def _refusal(bootstrap: str, conf: dict[str, Any], errors: list[str], timeout: float) -> str:
    """Why a broker that accepts TCP did not answer: librdkafka's own reason (a failed TLS
    handshake, refused credentials), or what the likely cause is."""
    fix = "check the security settings (--kafka-config, DP_KAFKA_CONFIG, DP_KAFKA_*)"
    reason = next((e for e in errors if "brokers are down" not in e), None)
    if reason is not None:
        return f"Kafka at {bootstrap} did not let this client in: {reason.rpartition('/bootstrap: ')[2]}; {fix}"
    if str(conf.get("security.protocol", "plaintext")).lower() == "plaintext":
        return (unreachable_message(bootstrap, f"no Kafka broker answered within {timeout:.0f}s")
                + "; a TLS or SASL listener needs its settings: --kafka-config, DP_KAFKA_CONFIG or DP_KAFKA_*")
    return unreachable_message(bootstrap, f"no Kafka broker answered within {timeout:.0f}s")


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """host:port pairs of a bootstrap list; [] when one does not parse (then only the Kafka probe runs)."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().rpartition("://")[2]
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            return []
        out.append((host, int(port)))
    return out


def _tcp_failure(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connect to host:port fails, or None when it connects."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"unknown host {host!r}"
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout:.0f}s"
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def _silent_logger() -> logging.Logger:
    # A `logger` makes librdkafka hand its log lines to Python instead of printing them to stderr.
    logger = logging.getLogger("processor.kafka.probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _live_partitions(admin: AdminPort, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of every topic the broker's metadata lists without error."""
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot list topics: {exc.args[0]} (is Kafka running and reachable?)") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None and t.partitions}


def live_configs(admin: AdminPort, names: Iterable[str], within: float = VISIBLE_WITHIN_S) -> dict[str, dict[str, str]]:
    """Configs of the named topics. A topic the broker does not know yet (metadata lag right after
    its creation) is asked for again until `within` seconds have passed."""
    deadline = time.monotonic() + within
    pending = list(names)
    out: dict[str, dict[str, str]] = {}
    while pending:
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in pending])
        pending = []
        for res, fut in futures.items():
            try:
                entries = fut.result(timeout=10)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                    pending.append(res.name)
                    continue
                raise KafkaUnavailableError(f"cannot read the configs of topic {res.name}: {err}") from exc
            except TimeoutError:
                raise KafkaUnavailableError(f"reading the configs of topic {res.name} timed out") from None
            out[res.name] = {k: v.value for k, v in entries.items()}
        if pending:
            time.sleep(0.1)
    return out


def ensure_topics(bootstrap: str, specs: list[TopicSpec], *, exact_partitions: bool = True,
                  visible_within: float = VISIBLE_WITHIN_S) -> list[str]:
    """Create the missing topics; verify them all. Returns the names created. See `ensure_with`."""
    return ensure_with(admin_client(bootstrap), specs, exact_partitions=exact_partitions,
                       visible_within=visible_within)


def ensure_with(admin: AdminPort, specs: list[TopicSpec], *, exact_partitions: bool = True,
                visible_within: float = VISIBLE_WITHIN_S) -> list[str]:
    """Create the missing topics; verify every declared one. Returns the names created.

    Raises TopicMismatchError, naming topic and difference, if a topic's cleanup.policy disagrees
    with its declaration, co-partitioned topics differ in partition count, or (with
    `exact_partitions`, what `processor topics create` uses) the partition count differs from the
    declared one. Processes that merely run on existing topics pass exact_partitions=False: the
    live count is the truth once topics exist. Raises KafkaUnavailableError if a topic is still
    not in the broker's metadata `visible_within` seconds after the creates.

    Why it waits: the metadata a broker lists lags topic creation, by seconds on a loaded
    machine. A topic created a moment ago -- by this call, or by whoever made this call's create
    fail with TOPIC_ALREADY_EXISTS (a concurrent create, or a topic that existed but was not
    listed yet) -- can be missing from the listing right after, and a topic that is not listed
    would escape verification. So after any create, the listing is polled until every declared
    topic is in it, and then all of them are verified, including the ones created here.
    """
    live = _live_partitions(admin)
    missing = [s for s in specs if s.name not in live]
    created: list[str] = []
    if missing and not may_create():
        raise TopicMismatchError(
            f"topic(s) {', '.join(s.name for s in missing)} do not exist and this process may not create topics "
            "(DP_NO_CREATE / --no-create): an administrator runs `processor topics create` (see --dry-run)")
    if missing:
        created = _create(admin, missing)
        live = _await_listed(admin, [s.name for s in specs], visible_within)
    verify(admin, specs, live, exact_partitions=exact_partitions, within=visible_within)
    return created


def _create(admin: AdminPort, missing: list[TopicSpec]) -> list[str]:
    """Create `missing`; the names this call created (TOPIC_ALREADY_EXISTS is left to verification)."""
    brokers = len(admin.list_topics(timeout=10).brokers)
    new = []
    for s in missing:
        rf, configs = creation(s, brokers)
        new.append(NewTopic(s.name, s.partitions, rf, config=configs))
    futures = admin.create_topics(new, operation_timeout=30)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=60)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaUnavailableError(f"creating topic {name} failed: {exc.args[0]}") from exc
        except TimeoutError:
            raise KafkaUnavailableError(f"creating topic {name} timed out; is the broker overloaded?") from None
    return created


def _await_listed(admin: AdminPort, names: list[str], within: float) -> dict[str, int]:
    """Poll the topic listing until every name in `names` is in it with its partitions."""
    deadline = time.monotonic() + within
    pause = 0.05
    while True:
        live = _live_partitions(admin)
        absent = [n for n in names if n not in live]
        if not absent:
            return live
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaUnavailableError(
                f"topic(s) {', '.join(absent)} still not visible in the broker's metadata {within:.0f}s after "
                "being created, so they could not be verified; is the broker overloaded? Run "
                "`processor topics create` again to verify them."
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


def verify(admin: AdminPort, specs: list[TopicSpec], live: dict[str, int] | None = None, *,
           exact_partitions: bool = True, within: float = VISIBLE_WITHIN_S) -> None:
    """Check the listed topics among `specs` against their declarations (unlisted ones are skipped:
    `ensure_with` makes sure every declared topic is listed before it calls this)."""
    live = live if live is not None else _live_partitions(admin)
    problems = []
    existing = [s for s in specs if s.name in live]
    configs = live_configs(admin, [s.name for s in existing], within)
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
            + f") have different partition counts {sorted(co)}; they must match: a growth stopped halfway? "
            f"`processor topics scale --partitions {max(co)}` grows the others"
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
