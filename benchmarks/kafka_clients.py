"""Kafka consumer clients compared on the worker's read path: records/s a single consumer gets out of one
topic, with and without turning each value into an event (orjson + the batched decoder's checks).

    python -m benchmarks.kafka_clients [--events 200000] [--partitions 4] [--batch 20000]

The stream worker spends a third of its time in kafka-python's `poll` (benchmarks/results/stream_throughput.json),
which parses record batches in Python. confluent-kafka (librdkafka, C) is measured on the same topic, assigned
all partitions from the start, no consumer group (the worker's commit-after-write would add one commit per
micro-batch to either). Needs the local Kafka (`vista infra up`) and `pip install confluent-kafka` (it is not a
dependency of the product: one Kafka client for the whole product, chosen on these numbers). JSON under
runs/bench/ (benchmarks/results/ with `--commit-results`).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import NamedTuple

from benchmarks.output import Run, add_output_args, output_file


class _Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _produce(settings, topic: str, events: int) -> None:  # noqa: ANN001 - InfraSettings
    from stream.producer import make_event_producer

    producer = make_event_producer(settings)
    try:
        for i in range(events):
            user = f"u{i % 5000}"
            value = json.dumps({"user_id": user, "item_id": str(i % 20000), "action": i % 5,
                                "timestamp": 1_600_000_000 + i}).encode()
            producer.send(topic, key=user.encode(), value=value)
        producer.flush()
    finally:
        producer.close()


def kafka_python(settings, topic: str, events: int, batch: int, decode: bool) -> float:  # noqa: ANN001
    from kafka import TopicPartition

    from infra.kafka import make_consumer
    from stream.decode import decode_batch

    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False, max_poll_records=batch)
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        consumer.seek_to_beginning()
        got, t0 = 0, time.perf_counter()
        while got < events:
            records = [r for rs in consumer.poll(timeout_ms=1000, max_records=batch).values() for r in rs]
            if decode:
                decode_batch(records)
            got += len(records)
        return got / (time.perf_counter() - t0)
    finally:
        consumer.close()


def confluent(settings, topic: str, events: int, batch: int, decode: bool) -> float:  # noqa: ANN001
    from confluent_kafka import Consumer, TopicPartition

    from stream.decode import decode_batch

    consumer = Consumer({"bootstrap.servers": ",".join(settings.bootstrap_servers), "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got, t0 = 0, time.perf_counter()
        while got < events:
            messages = consumer.consume(num_messages=batch, timeout=1.0)
            if decode:
                decode_batch([_Record(m.topic(), m.partition(), m.offset(), m.key(), m.value()) for m in messages
                              if m.error() is None])
            got += len(messages)
        return got / (time.perf_counter() - t0)
    finally:
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=20_000)
    add_output_args(ap)
    args = ap.parse_args()

    from infra.kafka import ensure_topics
    from infra.settings import InfraSettings

    settings = InfraSettings()
    run = Run()
    topic = f"bench-clients-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, {topic: args.partitions})
    t0 = time.perf_counter()
    _produce(settings, topic, args.events)
    results = {"events": args.events, "partitions": args.partitions, "batch": args.batch,
               "produce_s": round(time.perf_counter() - t0, 2), "records_per_s": {}}
    for name, fn in (("kafka-python", kafka_python), ("confluent-kafka", confluent)):
        for decode in (False, True):
            label = f"{name}{' + decode_batch' if decode else ''}"
            results["records_per_s"][label] = round(fn(settings, topic, args.events, args.batch, decode))
            print(label, results["records_per_s"][label], flush=True)
    out = output_file("kafka_clients.json", args.commit_results)
    out.write_text(json.dumps({"meta": run.metadata(), **results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
