"""ScoringEngine: stored seeds -> ranked candidates. Shared by the HTTP service and the Kafka path.

It owns the model (loaded once, version checked at startup), the cold-start summary (computed once
per model), an optional freshness-bounded row cache, and the one batched forward pass: the rows of
all users in a batch are read with one concurrent prepared read, and every request's candidates go
through a single `model.score` call (candidate lists padded to the longest; candidates never mix,
so padding changes no score).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from cachetools import TTLCache
from models.device import resolve_device
from models.vista import UserSummary, VistaModel
from models.vocab import ItemVocab
from schemas.requests import Freshness, RankedItem, ScoreRequest, ScoreResponse
from schemas.rows import SummaryRow
from stream.rows import summary_from_rows
from stream.scorer.config import ScorerConfig
from stream.store import SummaryStore

log = logging.getLogger("vista.scorer")


class RowUnreadable(RuntimeError):
    """A user's stored row cannot be decoded (corrupt, truncated, or not of this model's shape). Only that
    user's requests fail; the row stays in Cassandra for inspection and a backfill rebuilds it."""


class UnknownModelError(RuntimeError):
    """The checkpoint is missing or is not the model_version the service was told to serve."""


@dataclass
class UserRecord:
    """A user's summary tensors (batch of 1) and how fresh they are."""

    summary: UserSummary
    freshness: Freshness
    cold: bool


class RecordCache:
    """Decoded user records, each served for at most `ttl_s` after it was read (cachetools' TTL + LRU);
    off when `ttl_s` is 0, so every request reads the newest row."""

    def __init__(self, ttl_s: float, max_users: int):
        self._cache: TTLCache | None = TTLCache(max_users, ttl_s) if ttl_s > 0 else None
        self._lock = threading.Lock()

    def get(self, user: str) -> UserRecord | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(user)

    def put(self, user: str, record: UserRecord) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache[user] = record

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else 0


@dataclass
class BatchStats:
    """What one batch did (for metrics)."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cold_starts: int = 0
    oov_candidates: int = 0
    unreadable_rows: int = 0


class ScoringEngine:
    """Model + store + cache; `rank_batch` turns validated requests into rankings."""

    def __init__(self, config: ScorerConfig, store: SummaryStore | None):
        from models.checkpoint import load_checkpoint

        self.config = config
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        if not config.ckpt.is_dir():
            raise UnknownModelError(f"checkpoint directory {config.ckpt} does not exist")
        try:
            model, vocab, meta = load_checkpoint(config.ckpt, device=resolve_device(config.device))
        except (FileNotFoundError, ValueError) as exc:
            raise UnknownModelError(f"cannot load checkpoint {config.ckpt}: {exc}") from exc
        version = meta["model_version"]
        if config.expected_model_version and config.expected_model_version != version:
            raise UnknownModelError(f"checkpoint {config.ckpt} has model_version {version}, "
                                    f"expected {config.expected_model_version}")
        self.model: VistaModel = model
        self.vocab: ItemVocab = vocab
        self.model_version: str = version
        self.store = store
        self.cache = RecordCache(config.cache_ttl_s, config.cache_max_users)
        with torch.no_grad():
            cold = model.summarize(model.init_state(1))
        # the cold-start summary of an empty history, computed once per model
        self.cold_summary = _float_summary(cold)
        self._cold_freshness = Freshness(events_seen=0, last_event_ts=None, updated_at=None)

    # ---- reading --------------------------------------------------------------------------------
    def records(self, user_ids: list[str], stats: BatchStats | None = None
                ) -> dict[str, UserRecord | RowUnreadable]:
        """Each user's summary: cache, else one concurrent prepared read, else the cold start; a row that
        cannot be decoded is that user's `RowUnreadable` (logged and counted), never the batch's failure."""
        stats = stats if stats is not None else BatchStats()
        out: dict[str, UserRecord | RowUnreadable] = {}
        missing = []
        for user in dict.fromkeys(user_ids):
            hit = self.cache.get(user)
            if hit is not None:
                out[user] = hit
                stats.cache_hits += 1
            else:
                missing.append(user)
        if missing:
            if self.store is None:
                raise RuntimeError("this engine has no store to read rows from")
            stats.cache_misses += len(missing)
            rows = self.store.read(missing, self.model_version, with_state=False)
            for user in missing:
                try:
                    record = self._record(rows.get(user))
                except ValueError as exc:  # BlobError included: the row, not the request, is bad
                    log.error("unreadable summary row", extra={"event": "row_unreadable", "user_id": user,
                                                               "model_version": self.model_version,
                                                               "reason": str(exc)[:300]})
                    stats.unreadable_rows += 1
                    out[user] = RowUnreadable(f"the stored summary of user {user!r} cannot be read; it is kept "
                                              "for inspection and a backfill of this user rebuilds it")
                    continue
                stats.cold_starts += record.cold
                self.cache.put(user, record)
                out[user] = record
        return out

    def _record(self, row: SummaryRow | None) -> UserRecord:
        if row is None:
            return UserRecord(self.cold_summary, self._cold_freshness, cold=True)
        summary = _float_summary(summary_from_rows([row]))
        if (summary.seeds is None) == self.model.cfg.target_readout:
            raise ValueError(f"the row of user {row.user_id!r} {'lacks' if summary.seeds is None else 'holds'} "
                             f"seeds, but model {self.model_version} "
                             f"{'reads' if self.model.cfg.target_readout else 'does not read'} them")
        return UserRecord(summary, Freshness(events_seen=row.events_seen, last_event_ts=row.last_event_ts,
                                             updated_at=row.updated_at), cold=False)

    # ---- scoring --------------------------------------------------------------------------------
    def logits(self, summaries: list[UserSummary], candidates: list[torch.Tensor]) -> list[torch.Tensor]:
        """One forward pass for all (summary, candidate rows) pairs; ragged lists padded with row 0."""
        width = max(int(c.numel()) for c in candidates)
        padded = torch.zeros(len(candidates), width, dtype=torch.long)
        for i, c in enumerate(candidates):
            padded[i, : c.numel()] = c
        dev = self.model.device
        seeds = torch.cat([s.seeds for s in summaries]).to(dev) if self.model.cfg.target_readout else None
        batch = UserSummary(seeds=seeds, recent_items=torch.cat([s.recent_items for s in summaries]).to(dev),
                            recent_h=torch.cat([s.recent_h for s in summaries]).to(dev))
        with torch.no_grad():
            out = self.model.score(batch, padded).float().cpu()
        return [out[i, : c.numel()] for i, c in enumerate(candidates)]

    def rank_batch(self, requests: list[ScoreRequest]) -> tuple[list[Ranking | RowUnreadable], BatchStats]:
        """Rank every request's candidates (one read, one forward pass for the whole batch); a request whose
        user's row cannot be read gets that error in its place, and the others are ranked as usual."""
        stats = BatchStats(requests=len(requests))
        records = self.records([r.user_id for r in requests], stats) if requests else {}
        failed = {u: rec for u, rec in records.items() if isinstance(rec, RowUnreadable)}
        ranked = self._rank([r for r in requests if r.user_id not in failed], records, stats)
        return [failed[r.user_id] if r.user_id in failed else next(ranked) for r in requests], stats

    def _rank(self, requests: list[ScoreRequest], records: dict, stats: BatchStats) -> Iterator[Ranking]:
        if not requests:
            return
        cand_rows, known = [], []
        for r in requests:
            cand_rows.append(torch.tensor([self.vocab.index(c) for c in r.candidates], dtype=torch.long))
            flags = [self.vocab.is_known(c) for c in r.candidates]
            stats.oov_candidates += flags.count(False)
            known.append(flags)
        scores = self.logits([records[r.user_id].summary for r in requests], cand_rows)
        for r, s, flags in zip(requests, scores, known):
            k = min(r.top_k or len(r.candidates), len(r.candidates))
            top = torch.topk(s, k) if k < len(r.candidates) else torch.sort(s, descending=True, stable=True)
            yield Ranking(r, self.model_version, top.indices.tolist(), top.values.tolist(), flags,
                          records[r.user_id].freshness)


def _float_summary(summary: UserSummary) -> UserSummary:
    """Stored fp16 tensors as fp32 (the scorer's compute type)."""
    seeds = summary.seeds.float() if summary.seeds is not None else None
    return UserSummary(seeds=seeds, recent_items=summary.recent_items, recent_h=summary.recent_h.float())


@dataclass
class Ranking:
    """One request's ranked candidates (positions into its candidate list), rendered on demand.

    `to_json` writes the ScoreResponse JSON directly: building 100 pydantic items per request cost more
    than the forward pass (about 1 ms per request, measured)."""

    request: ScoreRequest
    model_version: str
    order: list[int]
    scores: list[float]
    known: list[bool]
    freshness: Freshness

    def response(self) -> ScoreResponse:
        c = self.request.candidates
        items = [RankedItem(item_id=c[j], score=v, rank=i + 1, known=self.known[j])
                 for i, (j, v) in enumerate(zip(self.order, self.scores))]
        return ScoreResponse(user_id=self.request.user_id, model_version=self.model_version, items=items,
                             freshness=self.freshness, request_id=self.request.request_id)

    def to_json(self) -> bytes:
        c, f = self.request.candidates, self.freshness
        body = {
            "user_id": self.request.user_id,
            "model_version": self.model_version,
            "items": [{"item_id": c[j], "score": v, "rank": i + 1, "known": self.known[j]}
                      for i, (j, v) in enumerate(zip(self.order, self.scores))],
            "freshness": {"events_seen": f.events_seen, "last_event_ts": f.last_event_ts,
                          "updated_at": f.updated_at.isoformat() if f.updated_at else None},
            "request_id": self.request.request_id,
        }
        return json.dumps(body, allow_nan=False).encode()
