"""The scoring HTTP service (FastAPI): POST /v1/score, GET /v1/items, /healthz, /readyz, /metrics.

    app = create_app(served, session)      # served: ServedModels (or one ScoringEngine); session: Cassandra's
    uvicorn.run(app, host=..., port=...)

Request bodies are validated here, at the boundary, with the service's candidate cap: malformed JSON
and invalid requests get 422 with a readable message. A failing Cassandra read is 503, never a
silent cold start.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from schemas.requests import ScoreRequest, ScoreResponse, parse_request, validation_detail
from stream.scorer.batching import MicroBatcher
from stream.scorer.engine import RowUnreadable, ScoringEngine
from stream.scorer.metrics import ScorerMetrics
from stream.scorer.served import ServedModels
from stream.store import StoreError

if TYPE_CHECKING:
    from cassandra.cluster import Session

log = logging.getLogger("vista.scorer")
READY_QUERY = "SELECT release_version FROM system.local"
_PATHS = {"/v1/score", "/v1/items", "/healthz", "/readyz", "/metrics"}


def create_app(engine: ScoringEngine | ServedModels, session: Session | None, *,
               metrics: ScorerMetrics | None = None, close_session: bool = False, ready_timeout_s: float = 2.0,
               serving_paths: dict[str, Callable[[], bool]] | None = None,
               promoted_version: Callable[[], str | None] | None = None) -> FastAPI:
    """The service around loaded engines (models are loaded before the app exists: a missing or
    wrong-version model fails at startup). `close_session`: shut the driver down with the app.
    `serving_paths`: other ways this process answers (the Kafka path), each a liveness probe that
    /readyz checks too, so a dead path makes the process unready instead of silently answering less.
    `promoted_version`: read every `version_poll_s` seconds; the scorer switches to a new promotion."""
    metrics = metrics or ScorerMetrics()
    served = engine if isinstance(engine, ServedModels) else ServedModels.single(engine)
    cfg = served.config

    def process(requests: list[ScoreRequest]) -> list[bytes | RowUnreadable]:
        rankings, stats = served.current.rank_batch(requests)  # one engine per batch: its version answers
        metrics.record_batch(stats)
        # rendered on the batch thread, off the event loop; an unreadable row answers its own request only
        return [r if isinstance(r, RowUnreadable) else r.to_json() for r in rankings]

    batcher: MicroBatcher[ScoreRequest, bytes | RowUnreadable] = MicroBatcher(
        process, max_batch=cfg.batch_max_requests, max_wait_s=cfg.batch_wait_ms / 1000)

    async def follow_promotions() -> None:
        while True:
            await asyncio.sleep(cfg.version_poll_s)
            try:
                served.follow(await run_in_threadpool(promoted_version))
            except Exception:  # noqa: BLE001 - Cassandra away: keep serving, read again next time
                log.warning("could not read the promoted version", exc_info=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        await batcher.start()
        poller = None
        if promoted_version is not None and not served.pinned and cfg.version_poll_s > 0:
            poller = asyncio.create_task(follow_promotions())
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
            await batcher.stop()
            if close_session and session is not None:
                session.cluster.shutdown()

    app = FastAPI(title="vista scorer", lifespan=lifespan)
    app.state.served, app.state.metrics = served, metrics

    class CountRequests:
        """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): requests by path and status."""

        def __init__(self, inner):  # noqa: ANN001
            self.inner = inner

        async def __call__(self, scope, receive, send):  # noqa: ANN001
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            path = scope["path"] if scope["path"] in _PATHS else "other"

            async def counted(message):  # noqa: ANN001
                if message["type"] == "http.response.start":
                    metrics.requests.labels(path, str(message["status"]), "http").inc()
                await send(message)

            return await self.inner(scope, receive, counted)

    app.add_middleware(CountRequests)

    api_key = cfg.api_key.get_secret_value().encode() if cfg.api_key else None

    def refused(request: Request) -> JSONResponse | None:
        """401 unless the bearer token matches (when a key is configured)."""
        if api_key is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key):
            return None
        metrics.errors.labels("unauthorized").inc()
        return JSONResponse({"message": "missing or wrong bearer token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    async def bounded_body(request: Request) -> bytes | JSONResponse:
        """The body, read chunk by chunk and abandoned past `max_body_bytes` (never read whole first)."""
        declared = request.headers.get("content-length")
        too_large = JSONResponse({"message": f"body larger than {cfg.max_body_bytes} bytes"}, status_code=413)
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            metrics.errors.labels("too_large").inc()
            return too_large
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                metrics.errors.labels("too_large").inc()
                return too_large
            parts.append(chunk)
        return b"".join(parts)

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(request: Request) -> Response:
        t0 = time.perf_counter()
        if (denied := refused(request)) is not None:
            return denied
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            metrics.errors.labels("invalid").inc()
            return JSONResponse({"message": "Content-Type must be application/json"}, status_code=415)
        body = await bounded_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            parsed = parse_request(body, cfg.max_candidates)
        except ValidationError as exc:
            metrics.errors.labels("invalid").inc()
            message, detail = validation_detail(exc)
            return JSONResponse({"message": message, "detail": detail}, status_code=422)
        except ValueError as exc:
            metrics.errors.labels("invalid").inc()
            return JSONResponse({"message": str(exc), "detail": [{"loc": ["body"], "msg": str(exc),
                                                                   "type": "json_invalid"}]}, status_code=422)
        try:
            answer = await batcher.submit(parsed)
        except StoreError:
            metrics.errors.labels("store").inc()
            log.exception("summary store unavailable")
            return JSONResponse({"message": "summary store unavailable, retry later"}, status_code=503)
        except RowUnreadable as exc:  # our own message: which user, and what to do
            return JSONResponse({"message": str(exc)}, status_code=500)
        except Exception:  # noqa: BLE001 - counted and logged here; the client gets no internals
            metrics.errors.labels("internal").inc()
            log.exception("scoring failed")
            return JSONResponse({"message": "internal error (logged by the scorer)"}, status_code=500)
        metrics.latency.labels("http").observe(time.perf_counter() - t0)
        return Response(answer, media_type="application/json")

    @app.get("/v1/items", response_model=None)
    async def items(request: Request, limit: int | None = None) -> dict[str, Any] | JSONResponse:
        """Known item ids of the model (for full ranking by a client)."""
        if (denied := refused(request)) is not None:
            return denied
        engine = served.current
        known = engine.vocab.items if limit is None else engine.vocab.items[: max(limit, 0)]
        return {"model_version": engine.model_version, "count": len(engine.vocab), "items": known}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_version": served.serving}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {"model": "ok"}
        for name, alive in (serving_paths or {}).items():
            checks[name] = "ok" if alive() else "stopped"
        if session is None:
            checks["cassandra"] = "no session"
        else:
            try:
                await run_in_threadpool(session.execute, READY_QUERY, timeout=ready_timeout_s)
                checks["cassandra"] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                checks["cassandra"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        ok = all(v == "ok" for v in checks.values())
        metrics.ready.set(1.0 if ok else 0.0)
        versions = {"serving": served.serving, "loaded": list(served.engines), "pinned": served.pinned,
                    "promoted_but_not_loaded": served.missing_promoted}
        return JSONResponse({"ready": ok, "model_version": served.serving, "versions": versions, "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def connect_store(settings: Any) -> tuple[Session, Any]:
    """A driver session that reconnects quickly after an outage (0.5 s .. 5 s), and its SummaryStore."""
    from cassandra.policies import ExponentialReconnectionPolicy

    from infra.cassandra import connect
    from stream.store import SummaryStore

    session = connect(settings, reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0))
    try:
        return session, SummaryStore(session, settings.cassandra_keyspace)
    except Exception:
        session.cluster.shutdown()
        raise
