"""Encrypted payloads on a real broker and real processes (issue 10 item 8): with
DP_PAYLOAD_CODECS=zlib,aes-gcm on the client, processor and workers, no topic holds the
plaintext of a workflow's input or result (read raw); a worker with the wrong key fails the
activity attempt with a clear reason and loses nothing (a worker with the right key completes
it); the CLI decodes with the same keys, and without them shows the key id only."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor import payloads
from processor._kafka.topics import TopicNames
from processor.client import Client
from processor.payloads import AesGcm, Zlib
from tests.dp_harness import REPO, Cluster, read_all, wait_for

pytestmark = pytest.mark.integration

KEY, WRONG = bytes(range(32)), bytes(range(1, 33))
SECRET = "4111-1111-1111-1111 Ada Lovelace"
SEALED = f"sealed:{SECRET[::-1]}"


def _env(key: bytes) -> dict[str, str]:
    return {"DP_PAYLOAD_CODECS": "zlib,aes-gcm", "DP_PAYLOAD_KEYS": f"k1:{base64.b64encode(key).decode()}"}


@pytest.fixture
def encrypting() -> Iterator[None]:
    payloads.configure([Zlib(), AesGcm({"k1": KEY})])
    yield
    payloads.reset()


def test_no_plaintext_on_the_wire_and_a_wrong_key_loses_nothing(kafka_bootstrap: str, prefix: str, tmp_path: Path,
                                                                 encrypting: None) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app="tests.apps.vault:app", partitions=2, env=_env(KEY))
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.processor(0)
        wrong = c.worker(0, env=_env(WRONG))
        handle = client.start_workflow("Vault", SECRET, id="vault-1")

        def failed_attempts() -> list[str]:
            return [str(e["failure"]["message"]) for e in client.history("vault-1")
                    if e["type"] == "ActivityAttemptFailed"]

        wait_for(lambda: len(failed_attempts()) >= 2, 120, interval=0.5, message="the wrong-key worker's attempts fail")
        assert "does not decrypt with this process's key 'k1' (authentication failed)" in failed_attempts()[0]
        c.stop(wrong)
        c.worker(1)  # the right key: the next retry completes
        assert handle.result(timeout=120) == SEALED

        topics = TopicNames(prefix)
        for topic in (topics.commands, topics.events, topics.completions, topics.tasks("default")):
            raw = b"".join((r[1] or b"") for r in read_all(kafka_bootstrap, topic, decode=False))
            assert raw, topic
            assert SECRET.encode() not in raw and SEALED.encode() not in raw, f"plaintext on {topic}"
            assert b"4111" not in raw and b"Lovelace" not in raw and b"json/plain" not in raw, topic

        def show(env: dict[str, str]) -> str:
            out = subprocess.run([sys.executable, "-m", "processor.cli", "show", "vault-1", "--bootstrap",
                                  kafka_bootstrap, "--prefix", prefix], cwd=REPO, capture_output=True, text=True,
                                 env={**{k: v for k, v in os.environ.items() if not k.startswith("DP_PAYLOAD")}, **env},
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            return out.stdout

        assert SEALED in show(_env(KEY))  # the operator with the key sees the result
        blind = show({})
        assert SEALED not in blind and "<encrypted with key 'k1'" in blind
    finally:
        client.close()
        c.close()
