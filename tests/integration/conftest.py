from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.client import Client
from tests.dp_harness import Cluster


@pytest.fixture
def cluster(kafka_bootstrap: str, prefix: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, prefix, tmp_path)
    yield c
    c.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(c.log_text())  # the processes' own logs, shown with the failure


@pytest.fixture
def client(kafka_bootstrap: str, prefix: str, cluster: Cluster) -> Iterator[Client]:
    c = Client(kafka_bootstrap, prefix=prefix)
    yield c
    c.close()
