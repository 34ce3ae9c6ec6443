"""The wire codec: Avro single-object encoding over the schemas in `schemas/`.

`python -m processor._codec.lock check|release` guards the fingerprints of released schemas.
"""

from __future__ import annotations

from processor._codec.codec import Codec, default_codec
from processor._codec.partitioner import murmur2, partition_for

__all__ = ["Codec", "default_codec", "murmur2", "partition_for"]
