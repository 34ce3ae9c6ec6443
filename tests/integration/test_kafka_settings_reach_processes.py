"""The Kafka configuration reaches every process, as an operator sets it: a file named by
--kafka-config / DP_KAFKA_CONFIG and DP_KAFKA_* variables, inherited by supervised children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from processor.client import Client
from tests.dp_harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration


def _members(bootstrap: str, group: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (fut,) = admin.describe_consumer_groups([group]).values()
    return sorted(m.client_id for m in fut.result(30).members)


def test_every_process_takes_the_file_and_the_variables(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    settings = tmp_path / "kafka.toml"
    settings.write_text('"client.id" = "acme"\n[consumer]\n"fetch.wait.max.ms" = 20\n[producer]\n'
                        '"compression.type" = "zstd"\n')
    env = {"DP_KAFKA_CONFIG": str(settings), "DP_KAFKA_SOCKET_KEEPALIVE_ENABLE": "true",
           "DP_KAFKA_SASL_PASSWORD": "hunter2"}  # ignored on PLAINTEXT; here to show it is never printed
    c = Cluster(kafka_bootstrap, prefix, tmp_path, env=env)
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.supervisor(processors=1, workers=1)  # `processor run`: the children inherit the settings
        assert client.start_workflow("ThreeSteps", 1, id="configured").result(timeout=120) == [2, 3, 4]
        wait_for(lambda: len(_members(kafka_bootstrap, f"{prefix}.processor")) == 1, 60,
                 message="the processor in its group")
        (processor,) = _members(kafka_bootstrap, f"{prefix}.processor")
        (worker,) = _members(kafka_bootstrap, f"{prefix}.workers.default")
        assert processor.startswith("acme-processor-") and worker.startswith("acme-worker-default-"), (processor,
                                                                                                      worker)
        assert processor.rsplit("-", 1)[1] != worker.rsplit("-", 1)[1], "the pid tells the processes apart"
        supervisor_log = (tmp_path / "logs" / "supervisor.log").read_text()
        assert "sasl.password=***" in supervisor_log and "compression.type=zstd" in supervisor_log
        assert "hunter2" not in c.log_text()
    finally:
        client.close()
        c.close()


def test_a_setting_the_engine_cannot_run_with_is_one_line_naming_it(kafka_bootstrap: str, prefix: str,
                                                                     tmp_path: Path) -> None:
    Cluster(kafka_bootstrap, prefix, tmp_path)  # the topics
    env = {**os.environ, "DP_KAFKA_CONSUMER_ENABLE_AUTO_COMMIT": "true"}
    done = subprocess.run([sys.executable, "-m", "processor.cli", "run", "--app", "tests.apps.basic:app", "--role",
                           "processor", "--bootstrap", kafka_bootstrap, "--prefix", prefix, "--state-dir",
                           str(tmp_path / "state")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: the Kafka setting enable.auto.commit=true cannot be used: the processor client needs "
        "enable.auto.commit=False"], done.stderr
    bad = subprocess.run([sys.executable, "-m", "processor.cli", "topics", "describe", "--bootstrap",
                          kafka_bootstrap, "--prefix", prefix], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DP_KAFKA_ADMIN_SOCKET_TIMEOUT_MS": "soon"})
    assert bad.returncode != 0 and bad.stderr.startswith("error: Kafka configuration: "), bad.stderr
    assert "Traceback" not in bad.stderr
