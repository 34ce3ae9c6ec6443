"""`processor kafka start` never reports a broker as started unless that broker answers: checked
without Java, with a fake broker process and a fake admin client."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka.admin
import pytest

from processor._kafka import local
from processor.exceptions import KafkaUnavailableError


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        yield s.getsockname()[1]


@dataclass
class _Md:
    cluster_id: str
    brokers: dict[int, object] = field(default_factory=lambda: {1: object()})


def _fake_admin(cluster_id: str) -> type:
    class FakeAdmin:
        def __init__(self, conf: dict[str, Any]) -> None:
            pass

        def list_topics(self, timeout: float = -1) -> _Md:
            return _Md(cluster_id)

    return FakeAdmin


def _broker_proc() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_another_kafka_answering_the_port_is_not_taken_for_ours(tmp_path: Path, listening: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", _fake_admin("theirs"))
    proc = _broker_proc()
    info = local.BrokerInfo(proc.pid, listening, 1, "ours", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match=rf"^port {listening} is answered by another Kafka \(cluster "
                       r"theirs\), not by the broker started in .*; pick a free port with --port N"):
        local.wait_ready(info, proc, timeout=10)
    assert proc.poll() is not None  # the broker that lost the port was stopped, not left behind


def test_our_broker_answering_is_ready(tmp_path: Path, listening: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", _fake_admin("ours"))
    proc = _broker_proc()
    try:
        local.wait_ready(local.BrokerInfo(proc.pid, listening, 1, "ours", str(tmp_path)), proc, timeout=10)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_broker_that_dies_says_why_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "broker.out").write_text("")
    (tmp_path / "broker.log").write_text(
        "[2026-12-01 22:34:53,316] INFO starting (kafka.server.KafkaRaftServer)\n"
        "[2026-12-01 22:34:53,316] ERROR Unable to start acceptor for PLAINTEXT (kafka.network.DataPlaneAcceptor)\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind to 127.0.0.1:9092: Address already "
        "in use.\n\tat kafka.network.Acceptor.openServerSocket(SocketServer.scala:729)\n"
        "Caused by: java.net.BindException: Address already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    proc.wait()
    with pytest.raises(KafkaUnavailableError) as err:
        local.wait_ready(local.BrokerInfo(proc.pid, 1, 1, "ours", str(tmp_path)), proc, timeout=10)
    assert str(err.value) == ("the Kafka broker exited with 1 while starting: Socket server failed to bind to "
                              f"127.0.0.1:9092: Address already in use.; see {tmp_path}/broker.log")


def test_start_refuses_a_busy_port_before_anything_runs(tmp_path: Path, listening: int) -> None:
    with pytest.raises(KafkaUnavailableError, match=rf"^port {listening} is already in use on 127.0.0.1"):
        local.start(tmp_path / "home", port=listening)
    assert not (tmp_path / "home" / "broker.json").exists()


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads `--cluster-id -x...` as an option and fails (CI: 1 fresh home in 64)."""
    draws = iter([b"\xfb" + bytes(15), bytes(16)])  # the first encodes to "-w...", the second to "AAAA..."
    monkeypatch.setattr(local.os, "urandom", lambda n: next(draws))
    assert local.new_cluster_id() == "A" * 22


def test_a_cluster_node_names_the_quorum_and_keeps_three_copies(tmp_path: Path) -> None:
    single = local.server_properties(tmp_path, 9092, 9093).splitlines()
    assert "node.id=1" in single and "controller.quorum.voters=1@127.0.0.1:9093" in single
    assert "transaction.state.log.replication.factor=1" in single and "transaction.state.log.min.isr=1" in single
    assert not any(line.startswith(("default.replication.factor", "broker.session.timeout.ms")) for line in single)
    voters = "1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003"
    node = local.server_properties(tmp_path, 9094, 7002, node_id=2, voters=voters, replicas=3).splitlines()
    assert "node.id=2" in node and f"controller.quorum.voters={voters}" in node
    for line in ("offsets.topic.replication.factor=3", "transaction.state.log.replication.factor=3",
                 "transaction.state.log.min.isr=2", "default.replication.factor=3", "min.insync.replicas=2",
                 "broker.session.timeout.ms=4000"):
        assert line in node, line
