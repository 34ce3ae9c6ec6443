"""When a long-lived Kafka client counts as wedged: the one rule every watchdog shares.

Seen in CI (librdkafka 2.16, after a broker restart, at load 12; librdkafka issue #5301 reports
the same): a client that lost its brokers during an outage sometimes never connects again --
a group consumer whose `committed()` times out for minutes, a worker consumer that never rejoins
its group, an idempotent producer whose every record times out -- while a new client reaches the
broker at once. Rebuilding that client is the cure; rebuilding it while Kafka itself is down
only churns. So a client counts as wedged once it has kept failing for `after_s` while Kafka
answered a *new* client (`require_reachable`, probed at most every `probe_every_s`); while Kafka
does not answer, the clock stands still.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from processor._kafka.topics import require_reachable
from processor.exceptions import KafkaUnavailableError

PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 5.0


def watchdog_s(env: str, default_ms: int) -> float:
    value = os.environ.get(env)
    return (int(value) if value else default_ms) / 1000


def kafka_answers(bootstrap: str) -> bool:
    """Whether a new client gets metadata from Kafka at `bootstrap` (within PROBE_TIMEOUT_S)."""
    try:
        require_reachable(bootstrap, timeout=PROBE_TIMEOUT_S)
    except KafkaUnavailableError:
        return False
    return True


class WedgeClock:
    """How long one client has been failing while Kafka answered a new client.

    The owner calls `ok()` when the client works and `failing(now)` while it does not (the owner
    decides what failing means: a restore that raised, no group membership, records pending and
    nothing delivered); `failing` answers True once the client is wedged, and the clock restarts
    so a replacement gets its own `after_s`.
    """

    def __init__(self, after_s: float, probe: Callable[[], bool], probe_every_s: float = PROBE_EVERY_S) -> None:
        self.after_s = after_s
        self._probe = probe
        self._probe_every_s = probe_every_s
        self._since: float | None = None  # failing, with Kafka answering, since
        self._next_probe = float("-inf")
        self._answers = False
        self.probes = 0
        self.wedged_for = 0.0  # how long it had failed, when `failing` last answered True
        self._was_down = False  # a probe found Kafka down since the clock last ran

    def ok(self) -> None:
        self._since = None

    def failing(self, now: float, began: float | None = None) -> bool:
        """`began`: when the failed operation started, if it ran a while (a call that timed out
        has been failing since it was made, not since it returned)."""
        if now >= self._next_probe:
            self._answers = self._probe()
            self.probes += 1
            self._next_probe = now + self._probe_every_s
        if not self._answers:  # an outage: the client is not to blame
            self._since = None
            self._was_down = True
            return False
        if self._since is None:
            # After an outage the clock starts now: a healthy client needs a moment to reconnect.
            self._since = now if began is None or self._was_down else began
            self._was_down = False
        if now - self._since < self.after_s:
            return False
        self.wedged_for = now - self._since
        self._since = now
        return True
