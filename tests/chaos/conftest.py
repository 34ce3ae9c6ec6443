from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dp_harness import Cluster


@pytest.fixture
def slow_cluster(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Activities take 0-40 ms so kills land while work is in flight."""
    c = Cluster(kafka_bootstrap, prefix, tmp_path, env={"DP_TEST_ACTIVITY_DELAY": "0.04"})
    yield c
    c.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(c.log_text())
