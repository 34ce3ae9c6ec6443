"""Local activities on a real broker (issue 11 item 5): a workflow of 100 local activities is
SIGKILLed in its processor mid-run; a new processor finishes it, and no local activity whose
LocalActivityRecorded was committed before the kill ran again (only those of the workflow task
in flight may, at least once as activities are)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from processor.client import Client
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def recorded_seqs(bootstrap: str, topic: str, wid: str) -> set[int]:
    """The local_activity_seq of every LocalActivityRecorded of `wid` committed on `topic`."""
    return {v["local_activity_seq"] for k, v, _ in read_all(bootstrap, topic)
            if k is not None and k.startswith(wid.encode() + b"@") and isinstance(v, dict)
            and v.get("type") == "LocalActivityRecorded"}


def test_a_processor_killed_mid_run_reruns_no_recorded_local_activity(kafka_bootstrap: str, prefix: str,
                                                                      tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app="tests.apps.local:app", partitions=2,
                env={"DP_TEST_LOCAL_DELAY": "0.03"})
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        first = c.processor(0)
        handle = client.start_workflow("LocalSteps", 100, id="local-1")
        wait_for(lambda: len(c.runs()) >= 45, 120, interval=0.05, message="local activities under way")
        c.kill(first)
        runs_at_kill = len(c.runs())
        committed = recorded_seqs(kafka_bootstrap, f"{prefix}.events", "local-1")
        assert committed, "some workflow task committed its local activities before the kill"
        c.processor(0)  # the same state dir: it restores and replays
        assert handle.result(timeout=120) == 100
        runs = Counter(seq for wid, seq, _ in c.runs() if wid == "local-1")
        assert set(runs) == set(range(1, 101)), "every local activity ran"
        assert {s: n for s, n in runs.items() if s in committed and n != 1} == {}, \
            "no committed local activity ran twice"
        again = sum(n - 1 for n in runs.values())
        assert again <= 100 - len(committed), "only the task in flight ran again"
        history = client.history("local-1")
        kinds = Counter(e["type"] for e in history)
        assert kinds["LocalActivityRecorded"] == 100 and kinds["ActivityScheduled"] == 0
        print(f"local activities: killed with {runs_at_kill} run, {len(committed)} committed; "
              f"{again} ran again after the restart; {kinds['TimerStarted']} task boundaries in 100")
    finally:
        client.close()
        c.close()
