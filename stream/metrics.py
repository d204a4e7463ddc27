"""Prometheus metrics of the stream worker, on a per-worker registry (several workers per process in tests).

Exposed on `--metrics-host`:`--metrics-port` (default 127.0.0.1:9464; port 0 = not served). Names are prefixed `vista_worker_`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STAGES = ("poll", "decode", "dlq", "read", "decode_state", "update", "summarize", "encode", "write", "commit")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000)


class WorkerMetrics:
    """Counters, gauges and histograms of one worker."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("vista_worker_events", "Records consumed, by outcome (applied, skipped, dlq)",
                              ["outcome"], registry=r)
        self.dlq = Counter("vista_worker_dlq", "Records sent to the dead-letter queue, by reason", ["reason"],
                           registry=r)
        self.dlq_undeliverable = Counter("vista_worker_dlq_undeliverable", "Dead letters the DLQ refused (too "
                                         "large for it): logged, their source offsets committed without them, "
                                         "never retried (alert on it)", registry=r)
        self.quarantined = Counter("vista_worker_quarantined_rows", "Stored rows that could not be decoded "
                                   "(their users' events set aside until a backfill rebuilds them; alert on it)",
                                   registry=r)
        self.oov = Counter("vista_worker_oov_events", "Applied events whose item id is not in the vocabulary",
                           registry=r)
        self.batches = Counter("vista_worker_batches", "Micro-batches committed", registry=r)
        self.batch_size = Histogram("vista_worker_batch_size", "Records per micro-batch", buckets=_SIZE_BUCKETS,
                                    registry=r)
        self.batch_latency = Histogram("vista_worker_batch_seconds", "Processing time of a micro-batch "
                                       "(decode to commit)", buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("vista_worker_stage_seconds", "Time per micro-batch in each stage",
                                       ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("vista_worker_consumer_lag", "High watermark minus committed offset", ["partition"],
                         registry=r)
        self.paused = Gauge("vista_worker_paused", "1 while consumption is paused (Cassandra or DLQ unreachable)",
                            registry=r)
        self.retries = Counter("vista_worker_retries", "Failed attempts that were retried, by stage", ["stage"],
                               registry=r)
        self.rebalances = Counter("vista_worker_rebalances", "Partition revocations seen", registry=r)
        self.cache_users = Gauge("vista_worker_cache_users", "Rows held in the in-process cache", registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve /metrics over HTTP (a daemon thread) until `close`; a clear error if the address is taken."""
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise RuntimeError(f"cannot serve worker metrics on {addr}:{port} ({exc}); give another "
                               "--metrics-port (each worker on a host needs its own), or 0 to turn them off") from None

    def close(self) -> None:
        """Stop serving /metrics (a worker in a test process or a restart frees its port)."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
