from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine_harness import OPEN


@pytest.fixture(autouse=True)
def _close_harnesses() -> Iterator[None]:
    """Close what a test left open (a failing or xfail test stops before its own close()): open
    RocksDB handles and workflow instances must not leak into later tests."""
    yield
    while OPEN:
        OPEN[-1].close()
