"""Failpoints: named places where a chaos test can make a process wait, to aim a fault (SIGSTOP,
SIGKILL) at an exact moment instead of hoping a race lines up.

Off unless `DP_FAILPOINTS` is set, e.g. `DP_FAILPOINTS=timer_txn=5000@/tmp/at-timer`: the first
time the process reaches `timer_txn` it creates the file `/tmp/at-timer` and waits 5000 ms there.
Each failpoint fires once per process. When off, `reach` is one dict lookup on an empty dict.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _parse(spec: str) -> dict[str, tuple[float, Path]]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, rest = item.partition("=")
        ms, _, marker = rest.partition("@")
        out[name] = (int(ms) / 1000, Path(marker))
    return out


_ARMED = _parse(os.environ.get("DP_FAILPOINTS", ""))


def reach(name: str) -> None:
    armed = _ARMED.pop(name, None) if _ARMED else None
    if armed is None:
        return
    wait_s, marker = armed
    marker.write_text(str(os.getpid()))
    time.sleep(wait_s)
