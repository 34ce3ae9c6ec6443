"""What a user sees when something is wrong: the CLI in a subprocess (no broker needed) answers
with an exit code and one line that says what to do -- never a traceback."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor import _cli_engine, cli
from processor._kafka import topics
from processor.client import Client
from processor.exceptions import KafkaUnavailableError, ProcessorError, WorkflowFailureError
from tests.kafka_twins import NoWatcher

CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


def _cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd, env=_env())


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DP_TRACEBACK")}
    env["DP_KAFKA_HOME"] = "/nonexistent/dp-kafka-home"  # no local broker to fall back to
    return env


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("verb", [
    ["topics", "create"], ["topics", "describe"], ["run", "--app", "examples.orders:app"],
    ["run", "--app", "examples.orders:app", "--role", "processor"], ["start", "OrderWorkflow", "--id", "x"],
    ["show", "x"], ["replay", "x", "--app", "examples.orders:app"], ["signal", "x", "s"], ["cancel", "x"],
    ["terminate", "x"],
])
def test_an_unreachable_broker_is_one_line_within_seconds(verb: list[str]) -> None:
    t0 = time.monotonic()
    proc = _cli(*verb, "--bootstrap", CLOSED, cwd=Path(__file__).resolve().parents[2])
    assert time.monotonic() - t0 < 10
    assert proc.returncode == cli.EXIT_ERROR
    line = _one_line(proc)
    assert line == (f"error: cannot reach Kafka at {CLOSED}: connection to {CLOSED} refused (is it running? "
                    "`processor kafka start`, or set --bootstrap/KAFKA_BOOTSTRAP)")
    assert "%3|" not in proc.stderr  # none of librdkafka's own log lines


def test_no_broker_at_all_says_how_to_get_one() -> None:
    proc = _cli("show", "x")
    assert proc.returncode == cli.EXIT_ERROR
    assert "pass --bootstrap HOST:PORT, set KAFKA_BOOTSTRAP, or run `processor kafka start`" in _one_line(proc)


def test_a_port_that_accepts_but_is_not_kafka_fails_after_the_probe_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(KafkaUnavailableError, match=rf"cannot reach Kafka at 127.0.0.1:{port}: no Kafka broker "
                           r"answered within 1s \(is it running\?"):
            topics.require_reachable(f"127.0.0.1:{port}", timeout=1.0)
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(("source", "expected"), [
    ("x = 1\ndef f(:\n    pass\n", r"^error: --app broken:app: syntax error in .*broken\.py:2: invalid syntax$"),
    ("import os\nimport not_a_module_anywhere\n",
     r"^error: --app broken:app: importing broken failed at .*broken\.py:2: ModuleNotFoundError: "
     r"No module named 'not_a_module_anywhere'$"),
    ("from processor import Worker\nother = 1\n",
     r"^error: --app broken:app: .*broken\.py has no attribute 'app'; it defines no processor\.Worker$"),
    ("app = 42\n", r"^error: --app broken:app: app is of type int, not a processor\.Worker"),
    ("from processor import Worker\napp = Worker()\n",
     r"^error: --app broken:app: importing broken failed at .*broken\.py:2: ConfigError: Worker\(workflows=.*"),
])
def test_a_broken_app_is_one_line_naming_file_and_line(tmp_path: Path, source: str, expected: str) -> None:
    (tmp_path / "broken.py").write_text(source)
    for verb in (["run", "--app", "broken:app", "--bootstrap", CLOSED], ["dev", "--app", "broken:app"]):
        proc = _cli(*verb, cwd=tmp_path)
        assert proc.returncode == cli.EXIT_ERROR, proc.stderr
        assert proc.stdout == ""  # dev refuses before it starts Kafka
        line = _one_line(proc)
        assert __import__("re").match(expected, line), line


def test_a_missing_app_module_says_where_it_looked(tmp_path: Path) -> None:
    proc = _cli("run", "--app", "nowhere.orders:app", "--bootstrap", CLOSED, cwd=tmp_path)
    assert proc.returncode == cli.EXIT_ERROR
    line = _one_line(proc)
    assert line.startswith(f"error: --app nowhere.orders:app: no module named 'nowhere' (looked in {tmp_path}")


def test_kafka_start_on_a_busy_port_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        proc = _cli("kafka", "start", "--dir", str(tmp_path / "home"), "--port", str(port))
    assert proc.returncode == cli.EXIT_ERROR
    assert proc.stdout == ""
    assert _one_line(proc) == (
        f"error: port {port} is already in use on 127.0.0.1, so the broker cannot listen there: stop what uses "
        "it, or pick another with `processor kafka start --port N` (--port 0: any free port)")
    assert not (tmp_path / "home" / "broker.json").exists()  # nothing was started


def test_a_bug_is_one_line_and_a_distinct_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli, "cmd_topics_describe", boom)
    monkeypatch.delenv("DP_TRACEBACK", raising=False)
    assert cli.main(["topics", "describe"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: unexpected RuntimeError: something broke -- a bug in durable-processor; "
                                "run again with DP_TRACEBACK=1 for the traceback and report it"]


# -- start --wait past its timeout ---------------------------------------------------------------


class _SlowClient:
    def result(self, workflow_id: str, timeout: float | None = None, run_id: str | None = None) -> Any:
        raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s")


class _FailedClient:
    def result(self, workflow_id: str, timeout: float | None = None, run_id: str | None = None) -> Any:
        raise WorkflowFailureError(workflow_id, "failed", "card declined")


def test_start_wait_past_the_timeout_says_it_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_engine._print_result(_SlowClient(), "order-1", 2.5) == cli.EXIT_STILL_RUNNING == 3
    out = capsys.readouterr()
    assert out.err == "workflow order-1 still running after 2.5s; it goes on; check with `processor show order-1`\n"
    assert _cli_engine._print_result(_FailedClient(), "order-2", 1) == 1
    assert capsys.readouterr().out == "order-2: workflow 'order-2' failed: card declined\n"


# -- topics missing on a reachable broker -----------------------------------------------------------


def test_a_client_verb_on_a_broker_without_the_topics_says_create_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "require_reachable", lambda bootstrap, timeout=8.0: {"wf.commands", "other"})
    args = argparse.Namespace(bootstrap="127.0.0.1:9", prefix="wf")
    with pytest.raises(ProcessorError, match=r"^Kafka at 127.0.0.1:9 has no topic wf.events, wf.completions, "
                       r"wf.replies: run "
                       r"`processor topics create` first \(or pass the --prefix the topics were created with; "
                       r"this was --prefix wf\)$"):
        _cli_engine._client(args)


# -- the dev demo stops at once on Ctrl-C -----------------------------------------------------------


class _NeverDone:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start_workflow(self, *args: Any, id: str, **kwargs: Any) -> None:  # noqa: A002
        self.started.append(id)

    def flush(self) -> None:
        pass

    def query(self, workflow_id: str, name: str, timeout: float = 30.0) -> Any:
        time.sleep(0.05)
        return {"status": "reserved"}  # never gets to "awaiting approval"

    def signal(self, workflow_id: str, name: str, *args: Any) -> None:
        pass

    def result(self, workflow_id: str, timeout: float | None = None, run_id: str | None = None) -> Any:
        time.sleep(timeout or 0)
        raise TimeoutError(workflow_id)


def test_the_demo_returns_promptly_once_stopped() -> None:
    client = _NeverDone()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    assert _cli_engine._demo(client, 3, stop.is_set) == cli.EXIT_INTERRUPTED
    assert time.monotonic() - t0 < 3
    assert len(client.started) == 3


# -- the client's send timeout says whether to resend ----------------------------------------------


class _NeverSet(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        return False


@pytest.fixture
def offline_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    import processor.client as client_module

    monkeypatch.setattr(client_module.threading, "Event", _NeverSet)
    monkeypatch.setattr(client_module, "Watcher", NoWatcher)  # the reply reader needs a broker; the send does not
    client = Client(CLOSED, prefix="offline")
    yield client
    client.producer.purge()
    client._closed.set()


def test_an_unacknowledged_send_says_it_may_arrive_and_whether_resending_is_safe(offline_client: Client) -> None:
    with pytest.raises(KafkaUnavailableError, match=r"StartWorkflow for 'a' was not acknowledged by Kafka within 30s; "
                       r"it may still arrive .*resending with the same request_id is safe: it attaches to the "
                       r"run this one started"):
        offline_client.start_workflow("T", id="a")
    with pytest.raises(KafkaUnavailableError, match=r"resending is safe: a repeated cancel changes nothing"):
        offline_client.cancel("a")
    with pytest.raises(KafkaUnavailableError, match=r"resending may deliver it twice: signals are not de-duplicated"):
        offline_client.signal("a", "go")


def test_a_client_remembers_a_bounded_number_of_starts(offline_client: Client) -> None:
    from processor.client import STARTS_KEPT, _Start

    for i in range(STARTS_KEPT + 100):
        offline_client._remember(f"w{i}", _Start())
    assert len(offline_client._starts) == STARTS_KEPT
    assert "w0" not in offline_client._starts and f"w{STARTS_KEPT + 99}" in offline_client._starts


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--metrics-port", "65535", "--processors", "2"], {}, "--metrics-port must leave a TCP port (1-65535) for each "
                                                           "process; 65535 gives them 65535-65537"),
    ([], {"DP_METRICS_PORT": "abc"}, "DP_METRICS_PORT must be a TCP port (1-65535); got 'abc'"),
    ([], {"DP_LOG_FORMAT": "xml"}, "--log-format (DP_LOG_FORMAT) must be one of text, json; got 'xml'"),
    ([], {"DP_PAYLOAD_KEYS": "k1:bad base64"}, "DP_PAYLOAD_KEYS: the key of id 'k1' is not base64"),
])
def test_bad_observability_and_payload_settings_are_one_line(args: list[str], env: dict[str, str],
                                                             expected: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "processor.cli", "run", "--app", "examples.orders:app",
                           "--bootstrap", CLOSED, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**_env(), **env})
    assert proc.returncode == cli.EXIT_ERROR
    assert _one_line(proc) == f"error: {expected}"
