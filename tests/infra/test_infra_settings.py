"""Settings and client configuration (no servers needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.cassandra import schema_statements
from infra.kafka import client_config, consumer_config
from infra.settings import InfraSettings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("VISTA_"):
            monkeypatch.delenv(key)
    s = InfraSettings()
    assert s.bootstrap_servers == ["127.0.0.1:9092"]
    assert s.cassandra_hosts == ["127.0.0.1"] and s.cassandra_port == 9042
    assert s.cassandra_keyspace == "vista"
    assert s.data_dir == Path("~/.cache/vista-stream/data").expanduser()
    assert s.jar_cache_dir == Path("~/.cache/vista-stream/jars").expanduser()
    assert set(s.topic_partitions) == {"events", "events.dlq", "score-requests", "score-responses"}


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISTA_KAFKA_PORT", "19092")
    monkeypatch.setenv("VISTA_EVENTS_PARTITIONS", "3")
    monkeypatch.setenv("VISTA_CASSANDRA_CONTACT_POINTS", "10.0.0.1, 10.0.0.2")
    monkeypatch.setenv("VISTA_DATA_DIR", str(tmp_path))
    s = InfraSettings()
    assert s.bootstrap_servers == ["127.0.0.1:19092"]
    assert s.topic_partitions["events"] == 3
    assert s.cassandra_hosts == ["10.0.0.1", "10.0.0.2"]
    assert s.kafka_dir == tmp_path / "kafka"
    monkeypatch.setenv("VISTA_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    assert InfraSettings().bootstrap_servers == ["b1:9092", "b2:9092"]


def test_unknown_fields_and_oversized_heaps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        InfraSettings(kafka_prot=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        InfraSettings(kafka_heap_mb=4096)
    with pytest.raises(ValidationError):
        InfraSettings(cassandra_heap_mb=4096)
    with pytest.raises(ValidationError):
        InfraSettings(cassandra_keyspace="bad-name")


def test_sasl_and_tls_reach_the_kafka_clients(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    s = InfraSettings(
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="app",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca,
    )
    cfg = client_config(s)
    assert cfg["bootstrap_servers"] == ["broker:9093"]
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == ("app", "s3cret")
    assert cfg["ssl_cafile"] == str(ca)
    assert "s3cret" not in repr(s)
    consumer = consumer_config(s, "g1")
    assert consumer["group_id"] == "g1" and consumer["enable_auto_commit"] is False
    with pytest.raises(ValueError, match="SASL_MECHANISM"):
        client_config(InfraSettings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_consumer_accepts_frames_as_large_as_its_fetches() -> None:
    """kafka-python 2.x defaults to 1 MB frames but 50 MB fetches: a busy fetch failed with 'Invalid frame
    length' (seen in the demo's worker log) until the frame limit followed the fetch limit."""
    s = InfraSettings()
    assert consumer_config(s, "g")["receive_message_max_bytes"] > 52_428_800
    small = consumer_config(s, "g", fetch_max_bytes=4_000_000)
    assert small["receive_message_max_bytes"] > 4_000_000
    assert consumer_config(s, "g", receive_message_max_bytes=123)["receive_message_max_bytes"] == 123


def test_plaintext_config_carries_no_security_options() -> None:
    cfg = client_config(InfraSettings(kafka_bootstrap_servers="b:9092"))
    assert cfg == {"bootstrap_servers": ["b:9092"], "security_protocol": "PLAINTEXT"}


def test_schema_statements_use_the_configured_keyspace() -> None:
    s = InfraSettings(
        cassandra_keyspace="vista_test",
        cassandra_replication="{'class': 'NetworkTopologyStrategy', 'dc1': 3}",
    )
    stmts = schema_statements(s)
    assert stmts[0].startswith("CREATE KEYSPACE IF NOT EXISTS vista_test")
    assert "'dc1': 3" in stmts[0]
    assert any("vista_test.user_summaries" in x and "PRIMARY KEY ((user_id), model_version)" in x for x in stmts)
    assert any("vista_test.backfill_progress" in x for x in stmts)
    assert all("IF NOT EXISTS" in x for x in stmts)
    assert not any("$" in x for x in stmts)


def test_the_secured_profile_keeps_its_data_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("VISTA_"):
            monkeypatch.delenv(key)
    assert InfraSettings(security_profile="secured").data_dir == Path("~/.cache/vista-stream/secured").expanduser()
    assert InfraSettings(security_profile="secured", data_dir=tmp_path).data_dir == tmp_path  # an explicit one wins
    monkeypatch.setenv("VISTA_SECURITY_PROFILE", "secured")
    assert InfraSettings().replace(kafka_port=19092).data_dir == Path("~/.cache/vista-stream/secured").expanduser()
    with pytest.raises(ValidationError):
        InfraSettings(security_profile="tls")
