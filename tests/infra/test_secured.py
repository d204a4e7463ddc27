"""The secured profile against real servers: Kafka SASL_SSL (SCRAM-SHA-512) and Cassandra with
PasswordAuthenticator and client TLS, certificates made by infra/certs.py. The backfill, the worker and the
scorer (the real CLI, as subprocesses) work with the generated login; with a wrong password each one fails
within a bounded time, naming the server and the refused login. One stack for the module, on free ports in
a temp dir; stopped at the end. Marked ``secured``: CI runs these as their own step (scripts/test.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra import cassandra, kafka, local, secured
from infra.proc import InfraError
from infra.settings import InfraSettings
from tests.infra.test_infra_instances import temp_settings
from tests.infra_helpers import free_port
from tests.stream.util import (ML100K, CommitWatcher, WorkerProcess, assert_stored_rows_match, end_offsets,
                               make_checkpoint)

pytestmark = [pytest.mark.secured,
              pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")]  # kafka-python
REPO = Path(__file__).resolve().parents[2]
API_KEY = "secured-test-key"
FAIL_WITHIN_S = 60  # a refused login is an error in seconds, never a hang


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfraSettings]:
    """A secured stack of its own (keyspace, tables and topics created); stopped after the module."""
    settings = temp_settings(tmp_path_factory.mktemp("secured"), security_profile="secured")
    try:
        local.up(settings)
        yield settings
    finally:
        local.down(settings)
        assert kafka.running_pid(settings) is None and cassandra.running_pid(settings) is None


@pytest.fixture(scope="module")
def client(stack: InfraSettings) -> InfraSettings:
    """The application's login to the secured stack."""
    return secured.client_settings(stack)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stream.producer import load_events

    path = tmp_path_factory.mktemp("secured-ckpt")
    make_checkpoint(path, sorted({e.item_id for e in load_events(ML100K)}, key=int))
    return path


def cli_env(stack: InfraSettings, **changes: str) -> dict[str, str]:
    """The environment of a CLI client: client.env's VISTA_* values (nothing else VISTA_* leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISTA_")}
    return {**env, **secured.client_env(stack), "VISTA_SCORER_API_KEY": API_KEY, **changes}


def test_profile_files_and_logins(stack: InfraSettings, client: InfraSettings) -> None:
    """Keys and passwords are private files; only the generated login over TLS gets in."""
    from cassandra.cluster import NoHostAvailable

    material = secured.load(stack)
    for private in (material.certs.ca_key, material.certs.server, material.env_file,
                    secured.secured_dir(stack) / "credentials.json"):
        assert private.stat().st_mode & 0o077 == 0, private
    env_lines = dict(line.split("=", 1) for line in material.env_file.read_text().splitlines()
                     if not line.startswith("#"))
    assert env_lines == secured.client_env(stack)
    from_env = InfraSettings(**{k.removeprefix("VISTA_").lower(): v for k, v in env_lines.items()})
    assert all(getattr(from_env, field) == getattr(client, field) for field in secured.client_overrides(stack))

    assert kafka.metadata_ok(client) == (True, "")
    assert cassandra.cql_ok(client) == (True, "")
    # Kafka: no TLS, the system CAs instead of ours, a wrong password: each refused with the reason
    for wrong, reason in ((client.replace(kafka_security_protocol="PLAINTEXT"), "connection failed"),
                          (client.replace(kafka_ssl_cafile=None), "CERTIFICATE_VERIFY_FAILED"),
                          (client.replace(kafka_sasl_password="wrong"), "SaslAuthenticationFailedError")):
        t0 = time.monotonic()
        with pytest.raises(kafka.KafkaConnectError, match=reason) as err:
            kafka.make_admin(wrong).close()
        assert f"127.0.0.1:{stack.kafka_port}" in str(err.value) and time.monotonic() - t0 < FAIL_WITHIN_S
    # Cassandra: no TLS, the default superuser's well-known password, a wrong password
    for wrong, reason in ((client.replace(cassandra_ssl_cafile=None), "Connection reset"),
                          (client.replace(cassandra_username="cassandra", cassandra_password="cassandra"),
                           "Bad credentials"),
                          (client.replace(cassandra_password="wrong"), "Bad credentials")):
        with pytest.raises(NoHostAvailable, match="Unable to connect") as err:
            cassandra.connect(wrong, keyspace=None)
        assert reason in repr(err.value.errors), err.value.errors
    # a plain profile refuses this data dir instead of starting servers that never get ready
    with pytest.raises(InfraError, match="holds a secured local stack"):
        local.up(stack.replace(security_profile="plain"))


def test_backfill_worker_and_scorer_work_with_the_generated_login(
        stack: InfraSettings, client: InfraSettings, ckpt: Path, tmp_path: Path) -> None:
    from stream.producer import load_events, make_event_producer, send_events

    events = load_events(ML100K, limit=3000)
    history, live = events[:1500], events[1500:]
    env = cli_env(stack)

    # backfill a file (its handover cut read from the secured Kafka, its rows written to the secured Cassandra)
    log = tmp_path / "history.jsonl"
    log.write_text("".join(e.model_dump_json() + "\n" for e in history))
    out = subprocess.run([sys.executable, "-m", "cli", "backfill", str(log), "--ckpt", str(ckpt), "--no-progress"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert (report["status"], report["applied"]) == ("done", len(history)), report

    # the worker continues the rows from live events sent over SASL_SSL
    producer = make_event_producer(client)
    try:
        send_events(producer, stack.topic_events, live)
    finally:
        producer.close()
    group = f"secured-workers-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(tmp_path / "worker.log", ckpt, stack.topic_events, group, stack.topic_events_dlq,
                           batch_events=500, env=env)
    watcher = CommitWatcher(client, stack.topic_events, group)
    try:
        watcher.wait_for(end_offsets(client, stack.topic_events), timeout=180, alive=worker.alive)
    finally:
        watcher.close()
        rc = worker.terminate()
    assert rc == 0, worker.log()[-3000:]
    assert worker.totals()["applied"] == len(live)

    expected = assert_stored_rows_match(client, ckpt, events)

    # the scorer reads those rows over TLS (HTTP path) and answers on Kafka over SASL_SSL (Kafka path)
    user = max(expected, key=lambda u: expected[u][0].n)
    port = free_port()
    scorer = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--ckpt", str(ckpt), "--port", str(port),
                               "--kafka", "--kafka-group", f"secured-scorer-{uuid.uuid4().hex[:8]}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, scorer)
        resp = httpx.post(f"{url}/v1/score", json={"user_id": user, "candidates": ["1", "2", "50"]},
                          headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["freshness"]["events_seen"] == expected[user][0].n
        answer = _ask_over_kafka(client, stack, user)
        assert answer["user_id"] == user and answer["freshness"]["events_seen"] == expected[user][0].n, answer
    finally:
        scorer.terminate()
        scorer.wait(timeout=60)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"scorer not ready:\n{proc.communicate()[0].decode()[-3000:]}")
        time.sleep(0.3)


def _ask_over_kafka(client: InfraSettings, stack: InfraSettings, user: str, timeout: float = 90) -> dict:
    from stream.scorer.kafka_path import HEADER

    cid = f"secured-{uuid.uuid4().hex[:8]}"
    producer = kafka.make_producer(client)
    try:
        producer.send(stack.topic_score_requests, key=user.encode(), headers=[(HEADER, cid.encode())],
                      value=json.dumps({"user_id": user, "candidates": ["1", "2"], "top_k": 2}).encode())
        producer.flush()
    finally:
        producer.close()
    reader = kafka.make_consumer(client, stack.topic_score_responses, group_id=None)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for part in reader.poll(timeout_ms=500).values():
                for rec in part:
                    if rec.key == cid.encode():
                        return json.loads(rec.value)
        raise AssertionError(f"no answer to {cid} on {stack.topic_score_responses} within {timeout}s")
    finally:
        reader.close()


WRONG = {
    "kafka": ({"VISTA_KAFKA_SASL_PASSWORD": "wrong-password"},
              ["login rejected", "SaslAuthenticationFailedError", "user 'vista'"]),
    "cassandra": ({"VISTA_CASSANDRA_PASSWORD": "wrong-password"},
                  ["AuthenticationFailed", "Provided username vista and/or password are incorrect"]),
}


@pytest.mark.parametrize("command", ["worker", "backfill", "scorer"])
@pytest.mark.parametrize("server", ["kafka", "cassandra"])
def test_a_wrong_password_fails_clearly_and_quickly(
        stack: InfraSettings, ckpt: Path, tmp_path: Path, command: str, server: str) -> None:
    log = tmp_path / "history.jsonl"
    log.write_text('{"user_id": "u1", "item_id": "1", "action": 1, "timestamp": 1}\n')
    args = {
        "worker": ["worker", "--ckpt", str(ckpt), "--topic", stack.topic_events, "--dlq-topic",
                   stack.topic_events_dlq, "--group", "secured-wrong", "--cold-start", "--metrics-port", "0"],
        "backfill": ["backfill", str(log), "--ckpt", str(ckpt), "--no-progress"],
        "scorer": ["serve", "--ckpt", str(ckpt), "--port", str(free_port()), "--kafka"],
    }[command]
    changes, expected = WRONG[server]
    port = stack.kafka_port if server == "kafka" else stack.cassandra_port
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=cli_env(stack, **changes),
                         capture_output=True, text=True, timeout=FAIL_WITHIN_S + 60)
    elapsed = time.monotonic() - t0
    text = out.stdout + out.stderr
    last = text.strip().splitlines()[-1] if text.strip() else ""
    print(f"{command} with a wrong {server} password: exit {out.returncode} after {elapsed:.1f}s: {last}")
    assert out.returncode != 0, text[-3000:]
    assert elapsed < FAIL_WITHIN_S, f"took {elapsed:.0f}s:\n{text[-3000:]}"
    # the last line (the error itself) names the server and the refused login
    assert f"127.0.0.1:{port}" in last and all(e in last for e in expected), text[-3000:]


def test_a_restarted_secured_stack_keeps_its_logins(stack: InfraSettings, client: InfraSettings) -> None:
    """Up again is a no-op; after down + up the broker's SCRAM user and the node's roles are still there (no
    second format, no second provisioning) and the default superuser stays locked out."""
    from cassandra.cluster import NoHostAvailable

    again = local.up(stack)
    assert not again["kafka"]["started"] and not again["cassandra"]["started"]
    local.down(stack)
    t0 = time.monotonic()
    restarted = local.up(stack)
    print(f"secured stack restarted in {time.monotonic() - t0:.1f}s")
    assert restarted["kafka"]["started"] and restarted["cassandra"]["started"]
    assert kafka.metadata_ok(client) == (True, "")
    assert cassandra.cql_ok(client) == (True, "")
    with pytest.raises(NoHostAvailable, match="Unable to connect"):
        cassandra.connect(client.replace(cassandra_username="cassandra", cassandra_password="cassandra"),
                          keyspace=None)
