"""The asynchronous path: ScoreRequests from `score-requests`, answers on `score-responses`.

Every answer carries the request's correlation id (the `correlation_id` header if present, else the
payload's `request_id`, else the record key) as its key, its header and its `request_id`. A malformed
request gets an error answer (`{"request_id", "error"}`), never silence. Offsets are committed only
after the answers of a poll are acknowledged by the broker; a crash before that answers again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pydantic import ValidationError

from infra.settings import InfraSettings
from schemas.requests import ScoreRequest, parse_request, validation_detail
from stream.scorer.engine import RowUnreadable, ScoringEngine
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.served import ServedModels
from stream.store import StoreError

log = logging.getLogger(__name__)
HEADER = "correlation_id"


def correlation_id(record: Any) -> str | None:
    """The correlation id of a consumed record (header, then payload request_id, then key)."""
    for name, value in record.headers or []:
        if name == HEADER and value:
            return value.decode("utf-8", "replace")
    try:
        payload = json.loads(record.value)
        if isinstance(payload, dict) and isinstance(payload.get("request_id"), str):
            return payload["request_id"]
    except (ValueError, TypeError):
        pass
    return record.key.decode("utf-8", "replace") if record.key else None


class KafkaScorer:
    """Consumes score requests in polls (a poll = one batch = one forward pass) and answers them."""

    def __init__(self, engine: ScoringEngine | ServedModels, settings: InfraSettings, *, group_id: str = "vista-scorer",
                 requests_topic: str | None = None, responses_topic: str | None = None,
                 metrics: ScorerMetrics | None = None, max_poll_records: int = 64):
        from infra.kafka import make_consumer, make_producer

        # the served models, shared with the HTTP app: a promotion switches both paths
        self.served = engine if isinstance(engine, ServedModels) else ServedModels.single(engine)
        self.metrics = metrics or ScorerMetrics()
        self.requests_topic = requests_topic or settings.topic_score_requests
        self.responses_topic = responses_topic or settings.topic_score_responses
        self.consumer = make_consumer(settings, self.requests_topic, group_id=group_id,
                                      max_poll_records=max_poll_records)
        self.producer = make_producer(settings, linger_ms=0)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Poll, score, answer, commit until `stop()`; closes the clients on exit."""
        try:
            while not self._stop.is_set():
                polled = self.consumer.poll(timeout_ms=200)
                records = [r for part in polled.values() for r in part]
                if records:
                    self.handle(records)
                    self.consumer.commit()
        finally:
            self.consumer.close()
            self.producer.close()

    def handle(self, records: list[Any]) -> None:
        """Answer every record (scores or an error); returns once the broker acknowledged all answers."""
        t0 = time.perf_counter()
        valid: list[tuple[str | None, ScoreRequest]] = []
        futures = []
        for record in records:
            cid = correlation_id(record)
            try:
                req = parse_request(record.value or b"", self.served.config.max_candidates)
                if cid is not None and req.request_id != cid:
                    req = req.model_copy(update={"request_id": cid})
                valid.append((cid, req))
            except ValidationError as exc:
                futures.append(self._error(cid, validation_detail(exc)[0]))
            except ValueError as exc:
                futures.append(self._error(cid, str(exc)))
        if valid:
            try:
                rankings, stats = self.served.current.rank_batch([r for _, r in valid])
                self.metrics.record_batch(stats)
                for (cid, _), ranking in zip(valid, rankings):
                    if isinstance(ranking, RowUnreadable):  # that request fails, the others are answered
                        futures.append(self._error(cid, str(ranking), status="500"))
                    else:
                        futures.append(self._send(cid, ranking.to_json(), "200"))
            except Exception as exc:  # noqa: BLE001 - each caller learns why, then the poll is committed
                log.exception("scoring a Kafka batch failed")
                self.metrics.errors.labels("store" if isinstance(exc, StoreError) else "internal").inc()
                reason = "summary store unavailable, retry later" if isinstance(exc, StoreError) else "internal error"
                futures.extend(self._error(cid, reason, status="503") for cid, _ in valid)
        self.producer.flush()
        for f in futures:
            f.get(timeout=30)
        elapsed = time.perf_counter() - t0
        for _ in valid:
            self.metrics.latency.labels("kafka").observe(elapsed)

    def _error(self, cid: str | None, message: str, status: str = "422") -> Any:
        if status == "422":
            self.metrics.errors.labels("invalid").inc()
        return self._send(cid, json.dumps({"request_id": cid, "error": message}).encode(), status)

    def _send(self, cid: str | None, value: bytes, status: str) -> Any:
        self.metrics.requests.labels(self.requests_topic, status, "kafka").inc()
        key = cid.encode() if cid else None
        headers = [(HEADER, key)] if key else []
        return self.producer.send(self.responses_topic, key=key, value=value, headers=headers)
