"""A paused processor (SIGSTOP past the session timeout) that resumes is a zombie: its partitions
are already another process's. Whatever it then tries to commit -- including a transaction that
only fires timers, with no input consumed -- must be fenced (issue 6, defect 1).

Counted from Kafka (read_committed): one completion record per workflow, unique event keys,
contiguous seqs.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from processor.client import Client
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SESSION_MS = 3_000
TIMER_S = 9.0


def _assigned_twice(c: Cluster, index: int) -> bool:
    return (c.logs / f"processor-{index}.log").read_text().count("assigned [") >= 2


@pytest.mark.parametrize(("busy", "aimed"), [(False, False), (True, False), (False, True)],
                         ids=["idle", "busy", "aimed"])
def test_resumed_zombie_commits_nothing(kafka_bootstrap: str, prefix: str, tmp_path: Path, busy: bool,
                                        aimed: bool) -> None:
    """`aimed`: the zombie is stopped at the exact moment the race needs -- it has decided to fire
    due timers and has not begun the transaction (a failpoint holds it there and says so) -- so
    on resuming it runs a timer-only transaction before it polls and learns it was replaced."""
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app="tests.apps.hardening:app",
                env={"DP_SESSION_TIMEOUT_MS": str(SESSION_MS)})
    marker = tmp_path / "zombie-at-timer-txn"
    try:
        client = Client(c.bootstrap, prefix=c.prefix)
        zombie = c.processor(0, env={"DP_FAILPOINTS": f"timer_txn=8000@{marker}"} if aimed else None)
        c.processor(1)
        c.worker()
        wait_for(lambda: all("assigned [" in (c.logs / f"processor-{i}.log").read_text() for i in (0, 1)), 90,
                 message="both processors own partitions")
        ids = [f"z-{i}" for i in range(300)]
        for wid in ids:
            client.start_workflow("Sleeper", TIMER_S, id=wid, wait_for_ack=False)
        client.flush()

        def all_sleeping() -> bool:
            started = Counter(ev["workflow_id"] for _, ev, _ in read_all(c.bootstrap, f"{c.prefix}.events")
                              if ev["type"] == "TimerStarted")
            return len(started) == len(ids)

        wait_for(all_sleeping, 90, interval=0.5, message="every workflow sleeping on its timer")
        if aimed:
            wait_for(marker.exists, 90, interval=0.02, message="the zombie reached its first timer transaction")
        os.kill(zombie.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        # Held until the survivor has taken the zombie's partitions and fired their timers.
        wait_for(lambda: _assigned_twice(c, 1), 90, message="processor 1 took over the zombie's partitions")
        busy_ids = []
        if busy:  # the survivor is also busy with new work while the zombie wakes up
            busy_ids = [f"zb-{i}" for i in range(100)]
            for wid in busy_ids:
                client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
            client.flush()
        for wid in ids:
            assert client.result(wid, timeout=120) == "slept"
        os.kill(zombie.pid, signal.SIGCONT)
        print(f"zombie paused {time.monotonic() - paused_at:.1f}s")
        for wid in busy_ids:
            assert client.result(wid, timeout=120) == [2, 3, 4]
        # Give the zombie time to act on what it believed it owned: its due timers.
        wait_for(lambda: "revoked [" in (c.logs / "processor-0.log").read_text() or zombie.poll() is not None, 90,
                 message="the zombie noticed it lost its partitions")
        time.sleep(2)
        client.close()

        everyone = ids + busy_ids
        completions = Counter(k.decode() for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.completions"))
        duplicates = {wid: n for wid, n in completions.items() if n != 1}
        keys = Counter(k for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.events", decode=False))
        dup_keys = [k for k, n in keys.items() if n > 1]
        print(f"{len(everyone)} workflows, {sum(completions.values())} completion records, "
              f"{len(dup_keys)} duplicate event keys")
        assert duplicates == {}, f"{len(duplicates)} workflows completed more than once"
        assert sorted(completions) == sorted(everyone)
        assert dup_keys == []
    finally:
        c.close()
