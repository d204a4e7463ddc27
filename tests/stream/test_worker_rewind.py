"""Dropped (uncommitted) records are sought back at once on partitions the worker still holds. The CI
failure this guards against: kafka-python 2.3 finished a rejoin without calling on_partitions_assigned,
a rewind deferred until "assigned" never ran, and 200 of 3000 events were committed without being
applied. Pure logic: the consumer here is a stand-in that records seeks (no broker involved)."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition

from stream.worker import Worker


class _Consumer:
    def __init__(self, assigned: set[TopicPartition]):
        self.assigned, self.seeks = assigned, {}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp in self.assigned, "kafka-python refuses to seek an unassigned partition"
        self.seeks[tp] = offset


def _worker(consumer: _Consumer, rejoining: bool) -> Worker:
    worker = Worker.__new__(Worker)  # only the drop/rewind state; no servers
    worker.consumer, worker._rejoining = consumer, rejoining
    return worker


def _records(partition: int, offsets: range) -> list:
    return [SimpleNamespace(topic="t", partition=partition, offset=o) for o in offsets]


def test_drop_seeks_held_partitions_back_even_while_rejoining() -> None:
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = _Consumer({p0})
    worker = _worker(consumer, rejoining=True)  # revoked, and "assigned" may never be reported
    worker._drop(_records(0, range(120, 140)) + _records(1, range(7, 9)))
    worker._drop(_records(0, range(100, 120)))  # the batch held before the poll that saw the rebalance
    assert consumer.seeks == {p0: 100}  # the first dropped record; p1 went elsewhere: no seek
    assert p1 not in consumer.seeks


def test_settled_falls_back_to_the_coordinator_state() -> None:
    from kafka.coordinator.base import MemberState

    coordinator = SimpleNamespace(state=MemberState.STABLE, need_rejoin=lambda: False)
    consumer = _Consumer(set())
    consumer._coordinator = coordinator
    worker = _worker(consumer, rejoining=True)
    assert worker._settled() and not worker._rejoining
    worker._rejoining, coordinator.state = True, MemberState.REBALANCING
    assert not worker._settled()
