"""Connection and local-server settings for Kafka and Cassandra.

Every field can be set from the environment with the ``VISTA_`` prefix
(``VISTA_KAFKA_PORT=19092``, ``VISTA_CASSANDRA_USERNAME=app``, ...). The
defaults describe the single-node servers that ``vista infra up`` runs on
127.0.0.1; pointing ``VISTA_KAFKA_BOOTSTRAP_SERVERS`` and
``VISTA_CASSANDRA_CONTACT_POINTS`` (plus the SASL/TLS and credential fields) at
a real cluster makes the same code run there unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CACHE_ROOT = Path("~/.cache/vista-stream")

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
CassandraConsistency = Literal["ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"]


class InfraSettings(BaseSettings):
    """Where Kafka and Cassandra are, how to reach them, and how to run them locally."""

    model_config = SettingsConfigDict(
        env_prefix="VISTA_",
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    # ------------------------------------------------------------------ local files
    data_dir: Path = CACHE_ROOT / "data"
    """Root of the local servers' state: ``kafka/`` and ``cassandra/`` below it hold data,
    generated configs, logs and pid files. ``vista infra reset`` wipes these two subfolders.
    Left unset with the secured profile, it is ``~/.cache/vista-stream/secured``, with the cluster profile
    ``~/.cache/vista-stream/cluster`` (the profiles never share data)."""

    local_nodes: int = Field(1, ge=1, le=3)
    """How many Cassandra nodes and Kafka brokers ``vista infra up`` runs on this machine: 1 (on 127.0.0.1) or 3
    (``--nodes 3``, the cluster profile: nodes on 127.0.0.11-13 with the standard ports, keyspace RF 3 in data
    center ``dc1``, topics RF 3 with min.insync.replicas 2; its clients' ``VISTA_*`` settings in
    ``<data_dir>/client.env``)."""

    security_profile: Literal["plain", "secured"] = "plain"
    """How ``vista infra up`` runs the local servers: ``plain`` (PLAINTEXT Kafka, Cassandra without TLS),
    or ``secured`` (Kafka SASL_SSL with SCRAM-SHA-512, Cassandra PasswordAuthenticator and client TLS;
    certificates, passwords and the clients' ``client.env`` generated under ``<data_dir>/security``)."""

    jar_cache_dir: Path = CACHE_ROOT / "jars"
    """Where ``vista infra fetch`` puts the server jars (``kafka/``, ``cassandra/``) and the
    Maven local repositories (``m2/``). Outside the repo; downloaded once, then reused."""

    java: str = "java"
    """Java 17+ executable used to run the local servers (a name on PATH or a path)."""

    mvn: str = "mvn"
    """Maven executable used by ``vista infra fetch`` to download the jars."""

    startup_timeout_s: float = 240.0
    """Seconds ``vista infra up`` waits for each server to answer before failing with its log tail."""

    # ------------------------------------------------------------------ Kafka
    kafka_bootstrap_servers: str | None = None
    """Comma-separated ``host:port`` list clients connect to. Unset: the local broker,
    ``127.0.0.1:<kafka_port>``."""

    kafka_port: int = Field(9092, ge=1, le=65535)
    """Client (PLAINTEXT) listener port of the local broker, bound on 127.0.0.1."""

    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    """KRaft controller listener port of the local broker, bound on 127.0.0.1."""

    kafka_heap_mb: int = Field(512, ge=128, le=1024)
    """Max heap (MiB) of the local Kafka JVM (at most 1 GiB)."""

    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    """Client security protocol: PLAINTEXT locally; SSL / SASL_PLAINTEXT / SASL_SSL for a real cluster."""

    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    """SASL mechanism when the protocol is SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""

    kafka_sasl_username: str | None = None
    """SASL username (SASL_PLAINTEXT / SASL_SSL)."""

    kafka_sasl_password: SecretStr | None = None
    """SASL password (SASL_PLAINTEXT / SASL_SSL)."""

    kafka_ssl_cafile: Path | None = None
    """PEM file of the CA(s) that signed the brokers' certificates (SSL / SASL_SSL)."""

    kafka_ssl_certfile: Path | None = None
    """PEM client certificate for mutual TLS (optional)."""

    kafka_ssl_keyfile: Path | None = None
    """PEM private key of ``kafka_ssl_certfile`` (optional)."""

    kafka_ssl_password: SecretStr | None = None
    """Password of ``kafka_ssl_keyfile`` if it is encrypted (optional)."""

    kafka_ssl_check_hostname: bool = True
    """Verify that broker certificates match their host names (SSL / SASL_SSL)."""

    kafka_replication_factor: int = Field(1, ge=1)
    """Replication factor of the topics ``vista infra init`` creates (1 locally, 3 on a real cluster)."""

    kafka_min_insync_replicas: int | None = Field(None, ge=1)
    """``min.insync.replicas`` of the topics ``vista infra init`` creates: how many replicas must have an
    acks=all write before it succeeds. Unset: the replication factor minus one, at least 1 (2 with RF 3, so
    one broker can be down and no acknowledged event lives on a single broker)."""

    # ------------------------------------------------------------------ topics
    topic_events: str = "events"
    """Input events, keyed by user id (all of a user's events land in one partition, in order)."""

    topic_events_dlq: str = "events.dlq"
    """Events that could not be processed, with the reason in their headers."""

    topic_score_requests: str = "score-requests"
    """Scoring requests for the streaming scorer."""

    topic_score_responses: str = "score-responses"
    """Scores produced for ``topic_score_requests``."""

    events_partitions: int = Field(8, ge=1)
    """Partition count of ``topic_events`` (upper bound on stream-worker parallelism)."""

    events_dlq_partitions: int = Field(1, ge=1)
    """Partition count of ``topic_events_dlq``."""

    score_requests_partitions: int = Field(4, ge=1)
    """Partition count of ``topic_score_requests``."""

    score_responses_partitions: int = Field(4, ge=1)
    """Partition count of ``topic_score_responses``."""

    # ------------------------------------------------------------------ Cassandra
    cassandra_contact_points: str = "127.0.0.1"
    """Comma-separated Cassandra hosts the driver first contacts."""

    cassandra_port: int = Field(9042, ge=1, le=65535)
    """CQL native-protocol port: what the driver connects to and what the local node listens on."""

    cassandra_storage_port: int = Field(7000, ge=1, le=65535)
    """Inter-node (gossip/storage) port of the local node, bound on 127.0.0.1."""

    cassandra_keyspace: str = Field("vista", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    """Keyspace holding the vista tables (created by ``vista infra init``)."""

    cassandra_replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    """CQL replication map used when creating the keyspace; e.g.
    ``{'class': 'NetworkTopologyStrategy', 'dc1': 3}`` on a real cluster."""

    cassandra_consistency: CassandraConsistency = "LOCAL_QUORUM"
    """Consistency level of every read and write (LOCAL_QUORUM: 2 of 3 replicas in the local data center, so a
    read sees every acknowledged write while one replica is down; the single replica locally)."""

    cassandra_local_dc: str | None = None
    """The driver's local data center: requests go to its nodes only (DC-aware load balancing) and
    LOCAL_QUORUM counts its replicas. Unset: the data center of the first contact point that answers."""

    cassandra_username: str | None = None
    """Username for PasswordAuthenticator (PlainTextAuthProvider); unset = no authentication."""

    cassandra_password: SecretStr | None = None
    """Password for ``cassandra_username``."""

    cassandra_ssl_cafile: Path | None = None
    """PEM CA file: set it to connect to Cassandra over TLS (client-to-node encryption)."""

    cassandra_request_timeout_s: float = Field(10.0, gt=0)
    """Default per-request timeout of the driver session (seconds)."""

    cassandra_protocol_version: int | None = Field(5, ge=3, le=6)
    """CQL native protocol version the driver speaks (5 for Cassandra 4.0+); unset = negotiate."""

    cassandra_heap_mb: int = Field(1024, ge=256, le=2048)
    """Max heap (MiB) of the local Cassandra JVM (at most 2 GiB)."""

    cassandra_authenticator: Literal["AllowAllAuthenticator", "PasswordAuthenticator"] = "AllowAllAuthenticator"
    """Authenticator of the local node. With PasswordAuthenticator the default superuser is
    ``cassandra``/``cassandra``. The secured profile always uses PasswordAuthenticator (its own roles)."""

    # ------------------------------------------------------------------ validators
    @field_validator("data_dir", "jar_cache_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator(
        "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "cassandra_ssl_cafile", mode="after"
    )
    @classmethod
    def _expand_optional(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @field_validator("local_nodes", mode="after")
    @classmethod
    def _one_or_three(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError("local_nodes is 1 (single node) or 3 (the cluster profile): two nodes cannot lose one")
        return value

    @model_validator(mode="after")
    def _profile_data_dir(self) -> InfraSettings:
        if self.security_profile == "secured" and self.local_nodes > 1:
            raise ValueError("the secured profile runs a single node (local_nodes=1)")
        if "data_dir" not in self.model_fields_set:
            if self.security_profile == "secured":
                self.data_dir = (CACHE_ROOT / "secured").expanduser().absolute()
            elif self.local_nodes > 1:
                self.data_dir = (CACHE_ROOT / "cluster").expanduser().absolute()
        return self

    @model_validator(mode="after")
    def _min_isr_fits(self) -> InfraSettings:
        min_isr = self.kafka_min_insync_replicas
        if min_isr is not None and min_isr > self.kafka_replication_factor:
            raise ValueError(f"kafka_min_insync_replicas ({self.kafka_min_insync_replicas}) exceeds "
                             f"kafka_replication_factor ({self.kafka_replication_factor}): no write could succeed")
        return self

    # ------------------------------------------------------------------ derived values
    def replace(self, **changes: object) -> InfraSettings:
        """A validated copy with ``changes`` applied (unlike ``model_copy(update=...)``)."""
        return type(self)(**{**self.model_dump(), **changes})

    @property
    def bootstrap_servers(self) -> list[str]:
        """Kafka bootstrap servers as a list (the local broker unless configured)."""
        if self.kafka_bootstrap_servers:
            return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]
        return [f"127.0.0.1:{self.kafka_port}"]

    @property
    def cassandra_hosts(self) -> list[str]:
        """Cassandra contact points as a list."""
        return [s.strip() for s in self.cassandra_contact_points.split(",") if s.strip()]

    @property
    def topic_partitions(self) -> dict[str, int]:
        """Every topic vista uses, with its partition count."""
        return {
            self.topic_events: self.events_partitions,
            self.topic_events_dlq: self.events_dlq_partitions,
            self.topic_score_requests: self.score_requests_partitions,
            self.topic_score_responses: self.score_responses_partitions,
        }

    @property
    def kafka_dir(self) -> Path:
        """State of the local broker (data, config, logs, pid file)."""
        return self.data_dir / "kafka"

    @property
    def cassandra_dir(self) -> Path:
        """State of the local Cassandra node (data, config, logs, pid file)."""
        return self.data_dir / "cassandra"


def load_settings(**overrides: object) -> InfraSettings:
    """Settings from the environment (``VISTA_*``), with keyword overrides on top."""
    return InfraSettings(**overrides)  # type: ignore[arg-type]
