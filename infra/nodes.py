"""Where each local server of a stack runs: one node on 127.0.0.1, or a cluster on loopback aliases.

Linux routes all of 127.0.0.0/8 to the loopback device, so the cluster profile (``vista infra up --nodes 3``)
gives every node an address of its own (127.0.0.11, .12, .13) with the standard ports, the way nodes of a
real cluster run on hosts of their own; the single-node stack on 127.0.0.1 keeps running beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

DATACENTER = "dc1"
"""The data center of the local cluster's Cassandra nodes (GossipingPropertyFileSnitch): the name the
keyspace's NetworkTopologyStrategy and the driver's DC-aware load balancing use."""

RACK = "rack1"
CLUSTER_HOST_BASE = 10
"""Node i (1-based) of the cluster profile listens on 127.0.0.(10 + i)."""


@dataclass(frozen=True)
class Node:
    """One local server: its id (Kafka ``node.id``, Cassandra token slot), its address and the addresses of
    every node of its stack (Cassandra seeds, Kafka controller voters)."""

    index: int = 1
    host: str = "127.0.0.1"
    peers: tuple[str, ...] = ("127.0.0.1",)

    @property
    def clustered(self) -> bool:
        """Part of a multi-node stack (own folder per node, replicated internals, a named data center)."""
        return len(self.peers) > 1

    @property
    def folder(self) -> str:
        """Its folder below the server's state dir ('' for the single node: the state dir itself)."""
        return f"node{self.index}" if self.clustered else ""

    def initial_token(self) -> int:
        """Its Murmur3 token: the ring split evenly, so no node has to bootstrap (all nodes are seeds)."""
        if not self.clustered:
            return 0
        n = len(self.peers)
        return -(2**63) + (self.index - 1) * (2**64 // n)


SINGLE = Node()


def cluster(count: int) -> list[Node]:
    """The nodes of a local cluster of ``count`` nodes on 127.0.0.11, 127.0.0.12, ..."""
    hosts = tuple(f"127.0.0.{CLUSTER_HOST_BASE + i}" for i in range(1, count + 1))
    return [Node(i, host, hosts) for i, host in enumerate(hosts, start=1)]
