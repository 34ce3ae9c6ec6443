"""Workflows end to end over SASL_SSL (issue 10): `processor kafka start --secure` starts a local
broker whose clients must use TLS (its own CA) and SCRAM-SHA-512; processors, workers, the
client and the CLI reach it through --kafka-config / DP_KAFKA_CONFIG alone, and a client
without the credentials, or with a wrong password, is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from processor._kafka import config
from processor.client import Client
from tests.dp_harness import REPO, Cluster

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "kafka"
    started = _cli("kafka", "start", "--secure", "--dir", str(home), "--port", "0")
    assert started.returncode == 0, started.stdout + started.stderr
    bootstrap = next(line.split()[1] for line in started.stdout.splitlines() if line.startswith("bootstrap:"))
    assert f"--kafka-config {home / 'client.properties'}" in started.stdout
    try:
        yield bootstrap, home / "client.properties"
    finally:
        _cli("kafka", "stop", "--dir", str(home))


def test_workflows_run_over_sasl_ssl_and_a_client_without_credentials_is_refused(
        secured: tuple[str, Path], prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap, settings = secured
    assert "sasl.password=" in settings.read_text() and oct(settings.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("DP_KAFKA_CONFIG", str(settings))
    config.reset()
    c = Cluster(bootstrap, prefix, tmp_path)  # topics created over SASL_SSL
    client = Client(bootstrap, prefix=prefix)
    try:
        c.processor(0)
        c.worker()
        assert client.start_workflow("ThreeSteps", 1, id="secured-1").result(timeout=120) == [2, 3, 4]
        shown = _cli("show", "secured-1", "--bootstrap", bootstrap, "--prefix", prefix)
        assert shown.returncode == 0 and "completed" in shown.stdout, shown.stderr
    finally:
        client.close()
        c.close()
    monkeypatch.delenv("DP_KAFKA_CONFIG")
    config.reset()
    # No credentials: the broker speaks TLS and SASL only.
    plain = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 5000})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=8)
    refused = _cli("topics", "describe", "--bootstrap", bootstrap, "--prefix", prefix)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "a TLS or SASL listener needs its settings: --kafka-config" in refused.stderr, refused.stderr
    # The right certificate authority and a wrong password: authentication fails.
    wrong = _cli("show", "secured-1", "--bootstrap", bootstrap, "--prefix", prefix, "--kafka-config", str(settings),
                 env={"DP_KAFKA_SASL_PASSWORD": "not-the-password"})
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "did not let this client in: SASL authentication error" in wrong.stderr, wrong.stderr
    print(refused.stderr.strip(), "|", wrong.stderr.strip())
