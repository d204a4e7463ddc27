"""What an operator needs to know of a worker group: who is in it, and how far behind the topic it is."""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import InfraSettings


@dataclass(frozen=True)
class GroupStatus:
    """A consumer group on one topic: its live members and its lag (end offset - committed, per partition)."""

    group: str
    members: int
    committed: dict[int, int]
    end: dict[int, int]

    @property
    def lag(self) -> int:
        """Records not yet committed by the group (a partition it never committed counts whole)."""
        return sum(end - self.committed.get(p, 0) for p, end in self.end.items())

    def as_dict(self) -> dict:
        return {"group": self.group, "members": self.members, "lag": self.lag,
                "committed": self.committed, "end": self.end}


def group_status(settings: InfraSettings, group: str, topic: str) -> GroupStatus:
    """Members and committed offsets of `group`, and the end offsets of `topic`."""
    from kafka import TopicPartition

    from infra.kafka import make_admin, make_consumer

    admin = make_admin(settings)
    try:
        described = admin.describe_consumer_groups([group])
        members = len(described[0].members) if described else 0
        offsets = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}
    consumer = make_consumer(settings)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        end = {tp.partition: off for tp, off in consumer.end_offsets(parts).items()} if parts else {}
    finally:
        consumer.close()
    return GroupStatus(group, members, committed, end)


def delete_group(settings: InfraSettings, group: str) -> None:
    """Delete an empty consumer group (its committed offsets go with it); a group that never existed is fine."""
    from kafka.errors import GroupIdNotFoundError

    from infra.kafka import make_admin

    admin = make_admin(settings)
    try:
        for _, error in admin.delete_consumer_groups([group]):  # (group, error class); NoError has errno 0
            if error.errno not in (0, GroupIdNotFoundError.errno):
                raise error(f"deleting consumer group {group}")
    finally:
        admin.close()
