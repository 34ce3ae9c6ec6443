"""`--log-format json` (processor/_logs.py): one JSON object a line with the workflow's and the
activity's fields; workflow.logger and activity.logger put them on their records; a bad format
is one clear error."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from processor import activity
from processor._logs import JsonFormatter, log_format, say, setup, task_fields
from processor.exceptions import ConfigError


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("processor.test")
    return logger.makeRecord("processor.test", logging.WARNING, __file__, 1, "held %s", ("wf-1",), None,
                             extra=extra or None)


def test_a_json_line_has_the_message_and_the_fields_present() -> None:
    line = JsonFormatter("processor-0").format(_record(workflow_id="wf-1", run_id="r1", activity_seq=2,
                                                       partition=3, attempt=None))
    got = json.loads(line)
    assert "\n" not in line
    assert got.pop("ts").endswith("Z")
    assert got == {"level": "WARNING", "logger": "processor.test", "message": "held wf-1", "process": "processor-0",
                   "workflow_id": "wf-1", "run_id": "r1", "activity_seq": 2, "partition": 3}


def test_an_exception_is_one_string_field() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    got = json.loads(JsonFormatter().format(record))
    assert got["message"] == "failed" and "process" not in got
    assert got["exception"].startswith("Traceback") and "ValueError: bad\nthing" in got["exception"]


def test_activity_logger_names_the_attempt(caplog: pytest.LogCaptureFixture) -> None:
    info = activity.ActivityInfo(workflow_id="order-7", workflow_type="Order", activity_seq=3, activity_type="charge",
                                 attempt=2, task_queue="payments", scheduled_time=datetime.now(UTC), run_id="run-9")
    token = activity._set_context(activity.ActivityContext(info=info, heartbeat_fn=lambda _: None))
    try:
        with caplog.at_level(logging.INFO, logger="processor.activity"):
            activity.logger.info("charging %d", 12)
    finally:
        activity._reset_context(token)
    [r] = caplog.records
    got = json.loads(JsonFormatter().format(r))
    assert {k: got[k] for k in ("message", "workflow_id", "run_id", "workflow_type", "activity_type", "activity_seq",
                                "attempt", "task_queue")} == {
        "message": "charging 12", "workflow_id": "order-7", "run_id": "run-9", "workflow_type": "Order",
        "activity_type": "charge", "activity_seq": 3, "attempt": 2, "task_queue": "payments"}


def test_task_fields_takes_what_a_task_names() -> None:
    task = {"workflow_id": "w", "run_id": "r", "activity_seq": 1, "attempt": 1, "args": [b"x"], "activity_type": "a"}
    assert task_fields(task) == {"workflow_id": "w", "run_id": "r", "activity_seq": 1, "attempt": 1,
                                 "activity_type": "a"}


def test_setup_formats_every_record_and_say_keeps_stdout_to_one_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup(verbose=True, fmt="json", process="worker-0")
        logging.getLogger("processor.kafka.worker-default").info("FAIL [thrd:x]: refused", extra={"partition": 1})
        say("running 1 processor(s)", "json", "supervisor")
        say("plain", "text")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out, err = capsys.readouterr()
    logged = json.loads(err.strip())
    assert (logged["logger"], logged["level"], logged["partition"], logged["process"]) == \
        ("processor.kafka.worker-default", "INFO", 1, "worker-0")
    first, second = out.strip().split("\n")
    assert json.loads(first)["message"] == "running 1 processor(s)" and json.loads(first)["process"] == "supervisor"
    assert second == "plain"


def test_the_format_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DP_LOG_FORMAT", raising=False)
    assert log_format(None) == "text"
    monkeypatch.setenv("DP_LOG_FORMAT", "JSON")
    assert log_format(None) == "json"
    assert log_format("text") == "text"
    with pytest.raises(ConfigError, match="must be one of text, json; got 'xml'"):
        log_format("xml")
