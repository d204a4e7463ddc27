"""Prometheus metrics of the scorer, on a per-service registry (several services per process in tests).

Names are prefixed `vista_scorer_`; requests/s is `rate(vista_scorer_requests_total[1m])`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.scorer.engine import BatchStats

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ScorerMetrics:
    """Requests, latency, batches, cache hit rate, cold starts and errors of one scorer."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("vista_scorer_requests", "Requests answered, by path, status code and transport",
                                ["path", "status", "transport"], registry=r)
        self.latency = Histogram("vista_scorer_request_seconds", "Time from receipt to answer of a score "
                                 "request", ["transport"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vista_scorer_batch_size", "Score requests per forward pass",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.cache = Counter("vista_scorer_cache_lookups", "Row-cache lookups, by result (hit, miss)", ["result"],
                             registry=r)
        self.cache_hit_ratio = Gauge("vista_scorer_cache_hit_ratio", "Hits / lookups of the row cache since start",
                                     registry=r)
        self.cold_starts = Counter("vista_scorer_cold_starts", "Requests for users without a stored row",
                                   registry=r)
        self.oov_candidates = Counter("vista_scorer_oov_candidates", "Candidates unseen in training (OOV bucket)",
                                      registry=r)
        self.errors = Counter("vista_scorer_errors", "Failed requests, by kind (invalid, unauthorized, too_large, "
                              "store, unreadable_row, internal)", ["kind"], registry=r)
        self.ready = Gauge("vista_scorer_ready", "1 when the last readiness check passed", registry=r)
        self._hits = 0
        self._lookups = 0

    def record_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.requests)
        self.cache.labels("hit").inc(stats.cache_hits)
        self.cache.labels("miss").inc(stats.cache_misses)
        self._hits += stats.cache_hits
        self._lookups += stats.cache_hits + stats.cache_misses
        if self._lookups:
            self.cache_hit_ratio.set(self._hits / self._lookups)
        self.cold_starts.inc(stats.cold_starts)
        self.oov_candidates.inc(stats.oov_candidates)
        self.errors.labels("unreadable_row").inc(stats.unreadable_rows)
