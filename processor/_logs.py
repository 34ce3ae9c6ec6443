"""How the processes log: `--log-format text|json` (DP_LOG_FORMAT), the level (-v), and the
fields a record about one workflow or activity carries.

A record may carry FIELDS as attributes (`log.warning(..., extra=task_fields(task))`,
`workflow.logger`, `activity.logger`); the JSON format writes each one present as its own key,
so a log pipeline can filter on `workflow_id` without parsing messages. librdkafka's lines
arrive as `processor.kafka.<client>` records (processor/_kafka/config.py) and take the same
format. One line per record, UTF-8 JSON, keys: ts (UTC, ISO 8601 with ms), level, logger,
message, process (which process of `processor run`), then FIELDS present, then `exception` (the
traceback, one string) when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from processor.exceptions import ConfigError

FORMATS = ("text", "json")
FIELDS = ("workflow_id", "run_id", "workflow_type", "activity_type", "activity_seq", "attempt", "task_queue",
          "partition", "offset")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process:
            out["process"] = self.process
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None and value != "":
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


def log_format(given: str | None = None) -> str:
    """The format asked for (`--log-format`, else DP_LOG_FORMAT, else text); ConfigError if unknown."""
    fmt = (given or os.environ.get("DP_LOG_FORMAT") or "text").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--log-format (DP_LOG_FORMAT) must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return fmt


def setup(verbose: bool, fmt: str = "text", process: str = "") -> None:
    """The root handler on stderr: INFO with -v, else WARNING; `process` names this process in
    JSON lines (processor-0, worker-1, supervisor)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def task_fields(task: Mapping[str, Any]) -> dict[str, Any]:
    """The FIELDS of an activity task (or a record naming one), for `extra=`."""
    return {k: task[k] for k in ("workflow_id", "run_id", "workflow_type", "activity_type", "activity_seq",
                                 "attempt", "task_queue") if k in task}


def say(message: str, fmt: str, process: str = "") -> None:
    """A status line for the terminal (stdout): as it is in text format, a JSON line of logger
    `processor.run` in json format, so that every line a process writes is of one format."""
    if fmt != "json":
        print(message, flush=True)
        return
    record = logging.makeLogRecord({"msg": message, "levelname": "INFO", "levelno": logging.INFO,
                                    "name": "processor.run"})
    print(JsonFormatter(process).format(record), flush=True)
