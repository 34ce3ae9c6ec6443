"""`processor kafka start|status|stop` as a user runs it: a second start is a no-op, and data
survives stop/start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor._kafka import local

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_start_is_idempotent_and_data_survives_restart(tmp_path: Path) -> None:
    home = tmp_path / "broker"
    port = str(local.free_port())
    try:
        first = _cli("kafka", "start", "--dir", str(home), "--port", port)
        assert first.returncode == 0, first.stderr
        assert f"bootstrap: 127.0.0.1:{port}" in first.stdout
        assert "started" in first.stdout
        again = _cli("kafka", "start", "--dir", str(home))
        assert again.returncode == 0 and "already running" in again.stdout
        status = _cli("kafka", "status", "--dir", str(home))
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout

        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("durable", 1, 1)])["durable"].result(30)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        p.produce("durable", b"survives", key=b"k")
        assert p.flush(30) == 0

        stopped = _cli("kafka", "stop", "--dir", str(home))
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert _cli("kafka", "status", "--dir", str(home)).returncode == 1

        restarted = _cli("kafka", "start", "--dir", str(home))
        assert restarted.returncode == 0 and f"bootstrap: 127.0.0.1:{port}" in restarted.stdout
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
        c.subscribe(["durable"])
        got = None
        for _ in range(100):
            m = c.poll(0.3)
            if m is not None and not m.error():
                got = m.value()
                break
        c.close()
        assert got == b"survives"
    finally:
        _cli("kafka", "stop", "--dir", str(home))


def test_start_on_the_port_of_a_running_broker_is_refused(kafka_bootstrap: str, tmp_path: Path) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("the session broker is not on this machine's loopback")
    proc = _cli("kafka", "start", "--dir", str(tmp_path / "home"), "--port", port)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"error: port {port} is already in use on 127.0.0.1, so the broker cannot listen there: stop what uses "
        "it, or pick another with `processor kafka start --port N` (--port 0: any free port)")
    assert not (tmp_path / "home" / "broker.json").exists()
