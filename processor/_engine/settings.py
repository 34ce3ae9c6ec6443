"""Settings of a processor or worker process; every knob has an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from processor._kafka.config import client_config
from processor._kafka.topics import DEFAULT_PREFIX, TopicNames


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


RETENTION_DEFAULT_S = 7 * 86_400


def retention_ms_from_env() -> int:
    """DP_RETENTION_S: how long a closed workflow's history is kept (seconds, may be fractional;
    0 = for ever). Default 7 days."""
    from processor.exceptions import ConfigError

    text = os.environ.get("DP_RETENTION_S", "")
    if not text:
        return RETENTION_DEFAULT_S * 1000
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"DP_RETENTION_S must be a number of seconds (0 = keep for ever); got {text!r}") from None
    if seconds < 0:
        raise ConfigError(f"DP_RETENTION_S must be 0 or more seconds; got {text!r}")
    return int(seconds * 1000)


def metrics_port_from_env() -> int | None:
    """DP_METRICS_PORT: a TCP port, or unset (no metrics served)."""
    from processor.exceptions import ConfigError

    text = os.environ.get("DP_METRICS_PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"DP_METRICS_PORT must be a TCP port (1-65535); got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    prefix: str = DEFAULT_PREFIX
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("DP_STATE_DIR", ".state")))
    # Commit cadence: a transaction closes when the input is drained (one consume() call returns
    # whatever is there, up to max_batch) -- low latency when idle, big batches under load.
    max_batch: int = field(default_factory=lambda: _env_int("DP_MAX_BATCH", 500))
    max_wait_ms: int = field(default_factory=lambda: _env_int("DP_MAX_WAIT_MS", 100))
    cache_size: int = field(default_factory=lambda: _env_int("DP_CACHE_SIZE", 10_000))
    session_timeout_ms: int = field(default_factory=lambda: _env_int("DP_SESSION_TIMEOUT_MS", 6_000))
    transaction_timeout_ms: int = field(default_factory=lambda: _env_int("DP_TRANSACTION_TIMEOUT_MS", 10_000))
    # Workflow code that runs this long without yielding is held as blocked (deadline.py).
    activation_deadline_ms: int = field(default_factory=lambda: _env_int("DP_ACTIVATION_DEADLINE_MS", 2_000))
    timers_per_tick: int = field(default_factory=lambda: _env_int("DP_TIMERS_PER_TICK", 1_000))
    # History retention (retention.py): a closed workflow is pruned this long after it closed.
    retention_ms: int = field(default_factory=retention_ms_from_env)
    prunes_per_tick: int = field(default_factory=lambda: _env_int("DP_PRUNES_PER_TICK", 100))
    # DP_ARCHIVE_DIR: write each pruned run's history there first (JSON lines, Replayer's form).
    archive_dir: Path | None = field(default_factory=lambda: Path(os.environ["DP_ARCHIVE_DIR"])
                                     if os.environ.get("DP_ARCHIVE_DIR") else None)
    # Evict every instance after each activation so every step replays from history: finds
    # nondeterminism and replay bugs in tests at the cost of speed.
    always_replay: bool = field(default_factory=lambda: os.environ.get("DP_ALWAYS_REPLAY", "") == "1")
    # Prometheus metrics at http://metrics_addr:metrics_port/metrics (processor/_metrics.py); None: not served.
    metrics_port: int | None = field(default_factory=lambda: metrics_port_from_env())
    metrics_addr: str = field(default_factory=lambda: os.environ.get("DP_METRICS_ADDR", "0.0.0.0"))  # noqa: S104

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.prefix)

    @property
    def processor_group(self) -> str:
        return f"{self.prefix}.processor"

    def worker_group(self, queue: str) -> str:
        return f"{self.prefix}.workers.{queue}"

    def group_consumer_config(self, group_id: str, client_id: str, instance_id: str | None = None) \
            -> dict[str, object]:
        """A consumer in a group that commits itself, with fail-over timing from these settings.

        Classic protocol with cooperative-sticky assignment: librdkafka rejects session timeouts
        under KIP-848, and fail-over speed must not depend on how the broker is configured.
        """
        return client_config("consumer", self.bootstrap, client_id, {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(250, self.session_timeout_ms // 4),
            "fetch.wait.max.ms": 10,
            # The group leader notices a grown topic on its next metadata refresh (default 5 min).
            "topic.metadata.refresh.interval.ms": 5_000,
        }, fixed={
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            **({"group.instance.id": instance_id} if instance_id else {}),
        })

    def with_state_dir(self, path: Path) -> Settings:
        return replace(self, state_dir=path)
