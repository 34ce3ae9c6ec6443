"""The processor: Kafka in, deterministic runtime, Kafka and RocksDB out (see docs/architecture.md)."""
