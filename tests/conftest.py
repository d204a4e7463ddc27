"""Shared pytest fixtures.

Integration tests (``@pytest.mark.integration``) run against the real local
Kafka and Cassandra: the session fixture ``infra_stack`` reuses a stack that
already answers (``vista infra up``, or a real cluster set via
``VISTA_*``), and otherwise starts the local one once and stops it again at the
end of the session. If the stack cannot come up, the tests fail with the reason;
nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cassandra.cluster import Session

    from infra.settings import InfraSettings


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas with the deprecated importlib.resources API.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def infra_stack() -> Iterator[InfraSettings]:
    """Settings of a running Kafka + Cassandra with the vista keyspace, tables and topics."""
    from infra import local
    from infra.settings import InfraSettings

    settings = InfraSettings()
    started: dict[str, bool] = {}
    try:
        if local.healthy(settings):
            local.init_schema_and_topics(settings)
        else:
            report = local.up(settings)
            started = {name: report[name]["started"] for name in ("kafka", "cassandra")}
    except Exception as exc:  # noqa: BLE001 - report any startup failure as a test failure
        pytest.fail(f"local Kafka/Cassandra could not be started or reached:\n{exc}", pytrace=False)
    yield settings
    # Stop only what this session started; a stack that was already up stays up.
    from infra import cassandra, kafka

    if started.get("kafka"):
        kafka.stop(settings)
    if started.get("cassandra"):
        cassandra.stop(settings)


@pytest.fixture(autouse=True)
def _integration_needs_infra(request: pytest.FixtureRequest) -> None:
    """Every test marked ``integration`` gets the stack, whether or not it asks for it."""
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("infra_stack")


@pytest.fixture(scope="session")
def cassandra_session(infra_stack: InfraSettings) -> Iterator[Session]:
    """A driver session on the vista keyspace, shared by the whole test session."""
    from infra.cassandra import connect

    session = connect(infra_stack)
    yield session
    session.cluster.shutdown()
