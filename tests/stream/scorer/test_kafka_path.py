"""The Kafka path against the real broker: answers keyed by correlation id, equal to HTTP's, errors answered."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from infra.kafka import ensure_topics, make_consumer, make_producer
from infra.settings import InfraSettings
from stream.scorer.client import ScorerClient
from stream.scorer.engine import ScorerConfig, ScoringEngine
from stream.scorer.kafka_path import HEADER, KafkaScorer
from stream.store import SummaryStore
from tests.stream.scorer.util import Fixture, ServerThread

pytestmark = pytest.mark.integration


def test_kafka_requests_get_answers_with_their_correlation_id(
    fixture: Fixture, server: ServerThread, infra_stack: InfraSettings, cassandra_session,  # noqa: ANN001
) -> None:
    tag = uuid.uuid4().hex[:10]
    req_topic, resp_topic = f"test-score-req-{tag}", f"test-score-resp-{tag}"
    ensure_topics(infra_stack, {req_topic: 2, resp_topic: 2})
    engine = ScoringEngine(ScorerConfig(ckpt=fixture.ckpt, max_candidates=50), SummaryStore(cassandra_session))
    scorer = KafkaScorer(engine, infra_stack, group_id=f"test-scorer-{tag}", requests_topic=req_topic,
                         responses_topic=resp_topic)
    thread = threading.Thread(target=scorer.run, daemon=True)
    thread.start()
    users = list(fixture.rows)
    cands = ["3", "1", "2", "unseen"]
    sent: dict[str, object] = {}
    producer = make_producer(infra_stack)
    try:
        for i, user in enumerate(users):
            cid = f"c-{tag}-{i}"
            sent[cid] = user
            producer.send(req_topic, key=user.encode(), headers=[(HEADER, cid.encode())],
                          value=json.dumps({"user_id": user, "candidates": cands, "top_k": 3}).encode())
        producer.send(req_topic, key=b"k", value=json.dumps({"user_id": "x", "request_id": f"bad-{tag}",
                                                             "candidates": []}).encode())
        producer.send(req_topic, key=f"junk-{tag}".encode(), value=b"not json")
        producer.flush()
        consumer = make_consumer(infra_stack, resp_topic, group_id=f"test-reader-{tag}")
        answers: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while len(answers) < len(users) + 2 and time.monotonic() < deadline:
            for part in consumer.poll(timeout_ms=500).values():
                for rec in part:
                    assert dict(rec.headers)[HEADER] == rec.key
                    answers[rec.key.decode()] = json.loads(rec.value)
        consumer.close()
    finally:
        producer.close()
        scorer.stop()
        thread.join(timeout=30)
    assert "candidates: List should have at least 1 item" in answers[f"bad-{tag}"]["error"]
    assert "body is not valid JSON" in answers[f"junk-{tag}"]["error"]
    with ScorerClient(server.url) as client:
        for cid, user in sent.items():
            ans = answers[cid]
            assert ans["request_id"] == cid and ans["user_id"] == user and ans["model_version"] == fixture.version
            http = client.score(user, cands, top_k=3)
            assert [(it["item_id"], pytest.approx(it["score"], abs=1e-6)) for it in ans["items"]] == \
                   [(it.item_id, it.score) for it in http.items]
