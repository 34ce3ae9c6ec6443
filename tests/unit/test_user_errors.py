"""Bad calls from a user get an exception that says what to fix (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from processor import Worker
from processor._kafka import local
from processor.client import Client
from processor.exceptions import ConfigError, KafkaUnavailableError, PayloadError
from tests.apps.basic import ThreeSteps, step


@pytest.fixture
def offline_client() -> Iterator[Client]:
    # Construction does not connect; every error below is raised before anything is sent.
    client = Client("127.0.0.1:1", prefix="offline")
    yield client
    client.close()


def test_unserialisable_argument_names_the_type(offline_client: Client) -> None:
    class Unserialisable:
        pass

    with pytest.raises(PayloadError, match="Unserialisable"):
        offline_client.start_workflow(ThreeSteps.run, Unserialisable(), id="x")


@pytest.mark.parametrize("bad_id", ["", "a\x00b"])
def test_bad_workflow_id(offline_client: Client, bad_id: str) -> None:
    with pytest.raises(ConfigError, match="workflow id must be a non-empty string without NUL"):
        offline_client.start_workflow(ThreeSteps.run, 1, id=bad_id)


def test_start_needs_a_workflow(offline_client: Client) -> None:
    with pytest.raises(ConfigError, match="not a workflow|@workflow.defn"):
        offline_client.start_workflow(object, id="x")
    with pytest.raises(ConfigError, match="needs a workflow class, its run method"):
        offline_client.start_workflow(42, id="x")  # type: ignore[arg-type]


def test_worker_registration_is_validated() -> None:
    with pytest.raises(ConfigError, match="at least one workflow or activity"):
        Worker()
    with pytest.raises(ConfigError, match="two activities are registered"):
        Worker(activities=[step, step])
    with pytest.raises(ConfigError, match="not an activity"):
        Worker(activities=[print])


def test_missing_java_or_maven_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(local.shutil, "which", lambda tool: None if tool == "java" else "/usr/bin/" + tool)
    monkeypatch.setenv("DP_CACHE_DIR", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match=r"`java` is not on PATH: install a Java 17\+ runtime"):
        local.start(local.Path(str(tmp_path)) / "home")
    monkeypatch.setattr(local.shutil, "which", lambda tool: None if tool == "mvn" else "/usr/bin/" + tool)
    with pytest.raises(KafkaUnavailableError, match=r"`mvn` is not on PATH: install Apache Maven"):
        local.ensure_jars(log=False)
