"""The activity worker hardened (issue 6, defect 3), through real processes:

- an activity result over the record limit fails the attempt (PayloadTooLarge) instead of being
  lost, and the partition's offsets keep committing: a restarted worker re-runs nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.client import Client
from processor.exceptions import WorkflowFailureError
from tests.dp_harness import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def hardening(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app="tests.apps.hardening:app")
    yield c
    c.close()


def test_an_oversized_result_fails_the_workflow_and_offsets_keep_committing(hardening: Cluster) -> None:
    client = Client(hardening.bootstrap, prefix=hardening.prefix)
    try:
        hardening.processor()
        first = hardening.worker()
        client.start_workflow("BigResult", 2_000_000, id="big-result")
        ids = [f"after-big-{i}" for i in range(30)]
        for wid in ids:
            client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
        client.flush()
        with pytest.raises(WorkflowFailureError) as info:
            client.result("big-result", timeout=60)
        chain: list[BaseException] = []
        cause = info.value.__cause__
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__
        too_large = [e for e in chain if getattr(e, "type", None) == "PayloadTooLarge"]
        assert too_large, f"no PayloadTooLarge in {[(getattr(e, 'type', None), str(e)) for e in chain]}"
        assert "2,000,0" in str(too_large[0]) and "record limit" in str(too_large[0])
        assert getattr(too_large[0], "non_retryable", None) is True
        for wid in ids:
            assert client.result(wid, timeout=60) == [2, 3, 4]
        time.sleep(1)  # several commit turns (every 0.1 s)
        hardening.kill(first)  # no graceful close: only what the loop committed counts
        hardening.worker(1)
        client.start_workflow("ThreeSteps", 1, id="after-restart")
        assert client.result("after-restart", timeout=90) == [2, 3, 4]
        runs = Counter((wid, seq) for wid, seq, _ in hardening.runs())
        assert runs[("big-result", 1)] == 1
        assert {k: n for k, n in runs.items() if n != 1} == {}, "tasks ran again after the restart"
    finally:
        client.close()
