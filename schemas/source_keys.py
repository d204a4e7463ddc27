"""Source keys of a row's `applied_offsets`: "topic:partition" for Kafka, "file:<name>" for files.

Built and parsed only here: the worker, the backfill, the DLQ and the CLI must name a partition
identically, or a row's offsets would not match the events the worker sees and it would apply them twice.
"""

from __future__ import annotations

import zlib


def partition_key(topic: str, partition: int) -> str:
    """The key of one Kafka partition, e.g. "events:3"."""
    return f"{topic}:{int(partition)}"


def parse_partition_key(key: str) -> tuple[str, int]:
    """"events:3" -> ("events", 3); a ValueError for anything `partition_key` does not build."""
    topic, sep, partition = key.rpartition(":")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"not a topic:partition key: {key!r}")
    return topic, int(partition)


def file_key(name: str) -> str:
    """The key of a file source, e.g. "file:u.data" (its offsets are line or row numbers)."""
    return f"file:{name}"


def user_shard(user_id: str, shards: int) -> int:
    """The backfill shard of a user (0 .. shards-1): crc32 of the id, the same on every machine and run
    (Python's hash() is salted per process)."""
    return zlib.crc32(user_id.encode()) % shards
