"""The cluster profile's settings, client environment and generated server configs (no servers needed; the
profile against real servers is tests/infra/test_cluster.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra import cassandra, cluster, kafka
from infra.nodes import DATACENTER, SINGLE
from infra.settings import InfraSettings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("VISTA_"):
            monkeypatch.delenv(key)


def test_three_nodes_have_their_own_data_dir_and_one_or_three_only(clean_env: None) -> None:
    assert InfraSettings(local_nodes=3).data_dir == Path("~/.cache/vista-stream/cluster").expanduser()
    assert InfraSettings().data_dir == Path("~/.cache/vista-stream/data").expanduser()
    for wrong in (2, 4):
        with pytest.raises(ValidationError):
            InfraSettings(local_nodes=wrong)
    with pytest.raises(ValidationError, match="single node"):
        InfraSettings(local_nodes=3, security_profile="secured")
    with pytest.raises(ValidationError, match="exceeds"):
        InfraSettings(kafka_replication_factor=1, kafka_min_insync_replicas=2)


def test_client_env_read_back_by_a_shell_gives_the_client_settings(clean_env: None, tmp_path: Path) -> None:
    settings = InfraSettings(local_nodes=3, data_dir=tmp_path)
    env_file = cluster.write_client_env(settings)
    out = subprocess.run(["bash", "-c", f"set -a; . {env_file}; set +a; env"], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ["PATH"]})
    read_back = {k: v for k, v in (line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
                 if k.startswith("VISTA_")}
    assert read_back == cluster.client_env(settings)
    client = InfraSettings(**{k.removeprefix("VISTA_").lower(): v for k, v in read_back.items()})
    assert client.bootstrap_servers == ["127.0.0.11:9092", "127.0.0.12:9092", "127.0.0.13:9092"]
    assert client.cassandra_hosts == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert client.cassandra_replication == f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': 3}}"
    assert (client.cassandra_local_dc, client.cassandra_consistency) == (DATACENTER, "LOCAL_QUORUM")
    assert (client.kafka_replication_factor, client.kafka_min_insync_replicas) == (3, 2)
    assert client.data_dir == tmp_path and client.local_nodes == 3


def test_node_configs(clean_env: None, tmp_path: Path) -> None:
    """Each node on its own address with the others as seeds / controller voters, a token of its own, the
    named data center, replicated Kafka internals; the single node keeps its old config."""
    settings = InfraSettings(local_nodes=3, data_dir=tmp_path)
    nodes = cluster.nodes(settings)
    tokens = set()
    for node in nodes:
        p = cassandra.paths(settings, node)
        cassandra._write_config(settings, p, node)
        yaml = (p.conf / "cassandra.yaml").read_text()
        assert f"listen_address: {node.host}" in yaml and f"rpc_address: {node.host}" in yaml
        assert 'seeds: "127.0.0.11:7000,127.0.0.12:7000,127.0.0.13:7000"' in yaml
        assert "endpoint_snitch: GossipingPropertyFileSnitch" in yaml and "hinted_handoff_enabled: true" in yaml
        assert f"dc={DATACENTER}" in (p.conf / "cassandra-rackdc.properties").read_text()
        tokens.add(node.initial_token())
        k = kafka.paths(settings, node)
        kafka._write_config(settings, k, node)
        props = (k.conf / "server.properties").read_text()
        assert f"node.id={node.index}" in props
        assert "controller.quorum.voters=1@127.0.0.11:9093,2@127.0.0.12:9093,3@127.0.0.13:9093" in props
        assert f"listeners=PLAINTEXT://{node.host}:9092,CONTROLLER://{node.host}:9093" in props
        assert "offsets.topic.replication.factor=3" in props and "\nmin.insync.replicas=2" in props
    assert len(tokens) == 3
    single = InfraSettings(data_dir=tmp_path / "single")
    cassandra._write_config(single, cassandra.paths(single), SINGLE)
    yaml = (cassandra.paths(single).conf / "cassandra.yaml").read_text()
    assert "listen_address: 127.0.0.1" in yaml and "endpoint_snitch: SimpleSnitch" in yaml and "initial_token: 0" in yaml
    kafka._write_config(single, kafka.paths(single), SINGLE)
    props = (kafka.paths(single).conf / "server.properties").read_text()
    assert "controller.quorum.voters=1@127.0.0.1:9093" in props and "offsets.topic.replication.factor=1" in props


def test_a_data_dir_holds_one_layout(clean_env: None, tmp_path: Path) -> None:
    from infra.proc import InfraError

    (tmp_path / "kafka" / "data").mkdir(parents=True)
    with pytest.raises(InfraError, match="single-node"):
        cluster.check_profile(InfraSettings(local_nodes=3, data_dir=tmp_path))
    cluster.check_profile(InfraSettings(data_dir=tmp_path))
    other = tmp_path / "c"
    (other / "cassandra" / "node1").mkdir(parents=True)
    with pytest.raises(InfraError, match="--nodes 3"):
        cluster.check_profile(InfraSettings(data_dir=other))


def test_producer_waits_out_a_leader_election(clean_env: None) -> None:
    cfg = kafka.producer_config(InfraSettings())
    assert cfg["acks"] == "all" and cfg["delivery_timeout_ms"] >= 60_000 and "retries" not in cfg
