"""Extra, temporary server instances (own data dir, non-default ports): port conflicts,
startup failures, authentication, restarts. Each test stops what it starts."""

from __future__ import annotations

import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import cassandra, kafka, local
from infra.proc import InfraError, PortInUseError, pid_alive
from infra.settings import InfraSettings
from tests.infra_helpers import free_port

pytestmark = pytest.mark.integration


def temp_settings(data_dir: Path, **overrides: object) -> InfraSettings:
    """Settings of a throwaway instance: own data dir and free ports, same jar cache."""
    values: dict[str, object] = dict(
        data_dir=data_dir,
        kafka_bootstrap_servers=None,
        kafka_security_protocol="PLAINTEXT",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap_mb=256,
        cassandra_contact_points="127.0.0.1",
        cassandra_port=free_port(),
        cassandra_storage_port=free_port(),
        cassandra_heap_mb=512,
        cassandra_username=None,
        cassandra_password=None,
        cassandra_ssl_cafile=None,
        startup_timeout_s=180,
    )
    values.update(overrides)
    return InfraSettings(**values)  # type: ignore[arg-type]


def assert_nothing_running(settings: InfraSettings) -> None:
    assert kafka.running_pid(settings) is None
    assert cassandra.running_pid(settings) is None


@pytest.mark.parametrize("which", ["kafka_port", "kafka_controller_port", "cassandra_port", "cassandra_storage_port"])
def test_busy_port_gives_a_clear_error_and_starts_nothing(tmp_path: Path, which: str) -> None:
    settings = temp_settings(tmp_path)
    port = getattr(settings, which)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PortInUseError) as err:
            local.up(settings)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "already in use" in message
    assert f"VISTA_{which.upper()}" in message
    assert_nothing_running(settings)


def test_server_dying_at_startup_reports_its_output(tmp_path: Path) -> None:
    fake_java = tmp_path / "fake-java"
    fake_java.write_text("#!/bin/sh\necho 'Error: simulated JVM failure' >&2\nexit 3\n")
    fake_java.chmod(fake_java.stat().st_mode | stat.S_IEXEC)
    settings = temp_settings(tmp_path / "data", java=str(fake_java))
    with pytest.raises(InfraError) as err:
        cassandra.start(settings)
    assert "exited during startup" in str(err.value)
    assert "simulated JVM failure" in str(err.value)
    assert_nothing_running(settings)


def test_startup_timeout_reports_log_tail_and_stops_the_server(tmp_path: Path) -> None:
    settings = temp_settings(tmp_path, startup_timeout_s=3)
    with pytest.raises(InfraError) as err:
        cassandra.start(settings)
    message = str(err.value)
    assert "did not become ready within 3s" in message
    assert "last lines of" in message
    assert_nothing_running(settings)


@pytest.fixture(scope="module")
def auth_cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfraSettings]:
    """A separate Cassandra with PasswordAuthenticator (default superuser cassandra/cassandra)."""
    settings = temp_settings(
        tmp_path_factory.mktemp("auth-cassandra"),
        cassandra_authenticator="PasswordAuthenticator",
        cassandra_username="cassandra",
        cassandra_password="cassandra",
        cassandra_keyspace="vista_auth_test",
    )
    try:
        cassandra.start(settings)
        yield settings
    finally:
        cassandra.stop(settings)
        assert cassandra.running_pid(settings) is None


def test_password_authenticator_rejects_a_wrong_password(auth_cassandra: InfraSettings) -> None:
    from cassandra.cluster import NoHostAvailable

    wrong = auth_cassandra.replace(cassandra_password="not-the-password")
    with pytest.raises(NoHostAvailable) as err:
        cassandra.connect(wrong, keyspace=None)
    assert "AuthenticationFailed" in repr(err.value.errors)
    anonymous = auth_cassandra.replace(cassandra_username=None, cassandra_password=None)
    with pytest.raises(NoHostAvailable):
        cassandra.connect(anonymous, keyspace=None)
    # The right password works.
    session = cassandra.connect(auth_cassandra, keyspace=None)
    try:
        assert session.execute("SELECT release_version FROM system.local").one().release_version.startswith("5.0")
    finally:
        session.cluster.shutdown()


def test_data_survives_cassandra_stop_and_start(auth_cassandra: InfraSettings) -> None:
    settings = auth_cassandra
    cassandra.apply_schema(settings)
    user, blob = f"u-{uuid.uuid4().hex[:8]}", os.urandom(1024)
    session = cassandra.connect(settings)
    try:
        insert = session.prepare(
            "INSERT INTO user_summaries (user_id, model_version, state, applied_offsets) VALUES (?, ?, ?, ?)"
        )
        session.execute(insert, (user, "v1", blob, {"events:0": 5}))
    finally:
        session.cluster.shutdown()

    old_pid = cassandra.running_pid(settings)
    assert cassandra.stop(settings) is True
    assert not pid_alive(old_pid) and cassandra.running_pid(settings) is None
    assert cassandra.cql_ok(settings)[0] is False
    assert cassandra.stop(settings) is False  # stopping a stopped node is a no-op

    report = cassandra.start(settings)
    assert report["started"] and report["pid"] != old_pid
    assert cassandra.start(settings)["started"] is False  # and starting a running one too
    session = cassandra.connect(settings)
    try:
        row = session.execute(
            session.prepare(
                "SELECT state, applied_offsets FROM user_summaries WHERE user_id = ? AND model_version = ?"
            ),
            (user, "v1"),
        ).one()
    finally:
        session.cluster.shutdown()
    assert row is not None and row.state == blob and dict(row.applied_offsets) == {"events:0": 5}


def test_temporary_kafka_up_down_reset(tmp_path: Path) -> None:
    """A second broker on other ports: format on first start, restart keeps topics, reset wipes."""
    settings = temp_settings(tmp_path)
    try:
        first = kafka.start(settings)
        assert first["started"]
        kafka.ensure_topics(settings, {"kept": 2})
        assert kafka.stop(settings) is True
        assert kafka.start(settings)["started"]
        admin = kafka.make_admin(settings)
        try:
            assert "kept" in admin.list_topics()
        finally:
            admin.close()
    finally:
        kafka.stop(settings)
    assert kafka.running_pid(settings) is None
    kafka.wipe(settings)
    assert not settings.kafka_dir.exists()
