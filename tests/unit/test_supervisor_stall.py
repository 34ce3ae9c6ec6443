"""The supervisor restarts a child that stopped making progress, not only one that exited."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from processor import _app


def test_a_child_whose_heartbeat_goes_stale_is_killed_and_restarted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_app, "STALL_TIMEOUT_S", 1.0)
    beat = tmp_path / "heartbeat"
    # Touches its heartbeat once, then wedges (sleeps) for good.
    wedged = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(beat)!r}).touch(); time.sleep(120)"]
    child = _app.Child("processor", 0, wedged, heartbeat=beat)
    done = threading.Event()
    t = threading.Thread(target=_app.supervise, args=([child], done.is_set), daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while child.restarts < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    t.join(60)
    assert child.restarts >= 1, "the wedged child was never restarted"


def test_a_child_that_keeps_beating_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_app, "STALL_TIMEOUT_S", 1.0)
    beat = tmp_path / "heartbeat"
    alive = [sys.executable, "-c",
             f"import pathlib, time\nfor _ in range(400):\n    pathlib.Path({str(beat)!r}).touch(); time.sleep(0.1)"]
    child = _app.Child("processor", 0, alive, heartbeat=beat)
    done = threading.Event()
    t = threading.Thread(target=_app.supervise, args=([child], done.is_set), daemon=True)
    t.start()
    time.sleep(3.5)
    done.set()
    t.join(60)
    assert child.restarts == 0
