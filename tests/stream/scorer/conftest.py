"""Fixtures of the scorer tests: one checkpoint + stored rows on the shared Cassandra, one live server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.scorer.client import ScorerClient
from stream.scorer.engine import ScorerConfig, ScoringEngine
from stream.scorer.service import create_app
from stream.store import SummaryStore
from tests.stream.scorer.util import Fixture, ServerThread, make_fixture

MAX_CANDIDATES = 50


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory, cassandra_session) -> Fixture:  # noqa: ANN001
    fx = make_fixture(tmp_path_factory.mktemp("scorer") / "ckpt")
    SummaryStore(cassandra_session).write(list(fx.rows.values()))
    return fx


@pytest.fixture(scope="module")
def server(fixture: Fixture, cassandra_session) -> Iterator[ServerThread]:  # noqa: ANN001
    config = ScorerConfig(ckpt=fixture.ckpt, max_candidates=MAX_CANDIDATES, batch_wait_ms=2.0)
    engine = ScoringEngine(config, SummaryStore(cassandra_session))
    with ServerThread(create_app(engine, cassandra_session)) as srv:
        yield srv


@pytest.fixture()
def client(server: ServerThread) -> Iterator[ScorerClient]:
    with ScorerClient(server.url) as c:
        yield c
