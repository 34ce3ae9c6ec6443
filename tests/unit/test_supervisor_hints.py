"""`processor run` as a supervisor, without Kafka: a child that keeps dying at start says why and
is restarted ever more slowly; a Ctrl-C stops every child at once, quietly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from processor import _app

WHY = "error: cannot reach Kafka at 127.0.0.1:1 (is it running? ...)"


def test_a_child_that_keeps_dying_at_start_says_why_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    dies = [sys.executable, "-c", f"import sys; print('starting', file=sys.stderr); sys.exit({WHY!r})"]
    child = _app.Child("processor", 0, dies)
    done = threading.Event()
    with caplog.at_level(logging.WARNING, logger="processor.run"):
        t = threading.Thread(target=_app.supervise, args=([child], done.is_set), daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while child.restarts < _app.HINT_AFTER + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        t.join(30)
    messages = [r.getMessage() for r in caplog.records if r.name == "processor.run"]
    assert messages[0] == "processor-0 exited with 1; restarting (restart 1)"
    hints = [m for m in messages if "times in a row" in m]
    assert hints, messages
    assert hints[0].startswith(f"processor-0 exited with 1 {_app.HINT_AFTER} times in a row within 15s of starting; "
                               "restarting in 1s")
    assert hints[0].endswith(f"Its last error: {WHY}")
    assert child.quick_deaths >= _app.HINT_AFTER + 1


def test_a_child_that_ran_a_while_is_restarted_at_once() -> None:
    child = _app.Child("worker", 0, [])
    child.started = time.monotonic() - 2 * _app.QUICK_DEATH_S
    child.quick_deaths = 5
    now = time.monotonic()
    _app._restart_later(child, 1, now)
    assert child.quick_deaths == 0 and child.restart_at == pytest.approx(now)


_SUPERVISOR = textwrap.dedent("""
    import signal, sys, threading
    from processor._app import Child, supervise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    child = "import time\\nimport processor.cli\\ntime.sleep(60)"
    kids = [Child("worker", i, [sys.executable, "-c", child]) for i in range(2)]
    print("ready", flush=True)
    supervise(kids, stop.is_set, grace=10)
    print("stopped", [k.proc.returncode for k in kids], flush=True)
""")


def test_ctrl_c_stops_the_children_promptly_and_quietly() -> None:
    # A terminal's Ctrl-C signals the whole foreground process group; the supervisor runs in a
    # session of its own here so the test can do the same to it alone.
    proc = subprocess.Popen([sys.executable, "-c", _SUPERVISOR], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the children are importing or sleeping
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out.strip() == f"stopped [{-signal.SIGTERM}, {-signal.SIGTERM}]"
