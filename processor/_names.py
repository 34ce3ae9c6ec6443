"""Names that become part of Kafka topic names, checked where a user gives them.

A task queue `q` is the topic `<prefix>.tasks.q`: Kafka allows only ASCII letters, digits, '.',
'_' and '-', and at most 249 characters in a topic name. A bad name found only when the topic is
created fails a transaction deep inside the processor; found at the call, it is a one-line error.
"""

from __future__ import annotations

import re

_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
MAX_QUEUE_NAME = 200  # leaves room for the prefix and ".tasks." within Kafka's 249


def task_queue_problem(name: object) -> str | None:
    """None if `name` can be a task queue, else what is wrong with it and how to fix it."""
    if not isinstance(name, str) or not name:
        return f"task queue name must be a non-empty string; got {name!r}"
    if len(name) > MAX_QUEUE_NAME:
        return f"task queue name {name[:40]!r}... is {len(name)} characters; at most {MAX_QUEUE_NAME}"
    if not _LEGAL.fullmatch(name) or name in (".", ".."):
        return (f"task queue name {name!r} is not usable as a Kafka topic name: use only ASCII letters, digits, "
                "'.', '_' and '-'")
    return None
