"""CLI verbs that run or inspect workflows (run, dev, start, show, replay, list, signal)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Filled in as the engine lands."""
