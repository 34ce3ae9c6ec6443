from __future__ import annotations

import pytest

from processor import Client
from processor._names import task_queue_problem
from processor.exceptions import ConfigError


@pytest.mark.parametrize("name", ["default", "orders.eu-1", "a_b", "x" * 200])
def test_usable_task_queue_names(name: str) -> None:
    assert task_queue_problem(name) is None


@pytest.mark.parametrize(("name", "says"), [("bad queue!", "only ASCII letters"), ("", "non-empty"),
                                            ("..", "only ASCII letters"), ("q" * 201, "at most 200"),
                                            (5, "non-empty string")])
def test_unusable_task_queue_names(name: object, says: str) -> None:
    problem = task_queue_problem(name)
    assert problem is not None and says in problem


def test_the_client_refuses_an_unusable_task_queue_before_sending() -> None:
    with pytest.raises(ConfigError, match="not usable as a Kafka topic name"):
        Client.start_record("ThreeSteps", (1,), "bad queue!", None)
