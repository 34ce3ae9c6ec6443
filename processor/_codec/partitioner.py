"""Kafka's default key partitioner, in pure Python.

Commands, events and timers of a workflow must share a partition whoever produced them, so the
engine computes partitions exactly as Kafka's Java client does by default:
`toPositive(Utils.murmur2(keyBytes)) % numPartitions`. (librdkafka's `murmur2_random` is the same
function; its default, `consistent_random`, is CRC32 and lands elsewhere.)
"""

from __future__ import annotations

from processor.exceptions import ConfigError

__all__ = ["murmur2", "partition_for"]

_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 of `data`, as Java's signed int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    left = length - tail
    if left == 3:
        h ^= data[tail + 2] << 16
    if left >= 2:
        h ^= data[tail + 1] << 8
    if left >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's Java default partitioner picks for a non-null `key`."""
    if num_partitions < 1:
        raise ConfigError(f"num_partitions must be at least 1, got {num_partitions}")
    # Java's Utils.toPositive: clear the sign bit (not abs(), which overflows on MIN_VALUE).
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
