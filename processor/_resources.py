"""Where the data folders shipped with the package live.

In a wheel, `schemas/`, `topics/` and the Kafka pom are copied under `processor/_data/`
(see pyproject.toml); in a source checkout (editable install, tests) they sit at the repo root.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    shipped = resources.files("processor").joinpath("_data", name)
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the {name}/ folder is missing from the processor package at {_PACKAGE_DIR}")


def schemas_dir() -> Path:
    return _data_dir("schemas")


def topics_dir() -> Path:
    return _data_dir("topics")
