"""Who a processor is to Kafka: its transactional.id, stable for as long as its state dir lives.

A restarted process reuses it, so its init_transactions fences its own zombie (a paused or
half-dead predecessor) at once and aborts whatever transaction that one left open.
"""

from __future__ import annotations

import uuid

from processor._engine.settings import Settings

ID_FILE = "transactional.id"


def stable_transactional_id(settings: Settings) -> str:
    """Read from the state dir, or made and written there on the first start."""
    path = settings.state_dir / ID_FILE
    if path.exists():
        return path.read_text().strip()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tid = f"{settings.prefix}.processor.{uuid.uuid4().hex[:12]}"
    path.write_text(tid)
    return tid
