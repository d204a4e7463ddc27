"""The 3-node profile against real servers: three Cassandra nodes and three KRaft brokers start from nothing,
form one cluster (keyspace RF 3 in dc1, topics RF 3 with min.insync.replicas 2), take `vista infra init`, and
stop cleanly; init never starts a server. On free ports in a temp dir, so it runs beside the single-node stack
and beside a developer's own cluster profile. About 4 minutes on 2 cores: marked ``cluster``, which
scripts/test.sh leaves out (run it with ``scripts/test.sh -m cluster``); the node-loss run is
benchmarks/node_loss.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra import cassandra, cluster, kafka, local
from infra.nodes import DATACENTER
from infra.settings import InfraSettings
from tests.infra.test_infra_instances import temp_settings

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def jvms_of(settings: InfraSettings) -> list[int]:
    """Pids of every process whose command line names this data dir (the cluster's JVMs)."""
    marker = str(settings.data_dir)
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def cli(settings: InfraSettings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISTA_")}
    env.update(cluster.client_env(settings), VISTA_JAR_CACHE_DIR=str(settings.jar_cache_dir))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_three_nodes_start_form_one_cluster_and_stop_cleanly(tmp_path: Path) -> None:
    # the profile's own heaps (1 GiB per Cassandra node, 512 MiB per broker), free ports
    settings = temp_settings(tmp_path, local_nodes=3, cassandra_heap_mb=1024, kafka_heap_mb=512,
                             startup_timeout_s=300)
    single = InfraSettings(local_nodes=1)
    single_pids = (kafka.running_pid(single), cassandra.running_pid(single))
    try:
        t0 = time.monotonic()
        report = local.up(settings)
        started_s = time.monotonic() - t0
        assert all(r["started"] for name in ("kafka", "cassandra") for r in report[name]), report
        status = local.status(settings)
        assert len(status) == 6 and all(r["ready"] for r in status.values()), status
        rss = {name: r["rss_mb"] for name, r in status.items()}
        print(f"3-node profile started from nothing in {started_s:.1f}s; JVM RSS {sum(rss.values()):.0f} MiB: "
              + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))

        client = cluster.client_settings(settings)
        assert cluster.cassandra_nodes_up(client) == 3 and cluster.kafka_brokers(client) == 3
        assert cassandra.keyspace_replication(client) == {
            "class": "org.apache.cassandra.locator.NetworkTopologyStrategy", DATACENTER: "3"}
        topics = kafka.describe_topics(client, list(client.topic_partitions))
        assert all((t["replication_factor"], t["min_insync_replicas"]) == (3, 2) for t in topics.values()), topics
        session = cassandra.connect(client)
        try:
            profile = session.cluster.profile_manager.default
            assert profile.consistency_level == 6  # ConsistencyLevel.LOCAL_QUORUM
            assert {h.datacenter for h in session.cluster.metadata.all_hosts()} == {DATACENTER}
        finally:
            session.cluster.shutdown()

        # `vista infra init` on a running cluster: a new topic with its replication settings, nothing started
        jvms = sorted(jvms_of(settings))
        out = cli(settings, "infra", "init")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "replication factor 3, min.insync.replicas 2" in out.stdout
        assert "NetworkTopologyStrategy" in out.stdout and f"'{DATACENTER}': '3'" in out.stdout
        assert sorted(jvms_of(settings)) == jvms

        t1 = time.monotonic()
        stopped = local.down(settings)
        print(f"3-node profile stopped in {time.monotonic() - t1:.1f}s")
        assert len(stopped) == 6 and all(stopped.values()), stopped
        assert jvms_of(settings) == []
        for node in cluster.nodes(settings):
            assert kafka.running_pid(settings, node) is None and cassandra.running_pid(settings, node) is None

        # init against a cluster that is down fails, and starts nothing
        out = cli(settings, "infra", "init")
        assert out.returncode == 1 and "error:" in out.stderr, out.stdout + out.stderr
        assert jvms_of(settings) == []
    finally:
        local.down(settings)
        assert jvms_of(settings) == []
    # the single-node stack was never touched
    assert (kafka.running_pid(single), cassandra.running_pid(single)) == single_pids
