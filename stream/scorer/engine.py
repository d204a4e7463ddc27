"""ScoringEngine: stored seeds -> ranked candidates. Shared by the HTTP service and the Kafka path.

It owns the model (loaded once, version checked at startup), the cold-start summary (computed once
per model), an optional freshness-bounded row cache, and the one batched forward pass: the rows of
all users in a batch are read with one concurrent prepared read, and every request's candidates go
through a single `model.score` call (candidate lists padded to the longest; candidates never mix,
so padding changes no score).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import torch
from cachetools import TTLCache
from kernels.dispatch import resolve_backend
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


def record_bytes(record: UserRecord) -> int:
    """Memory of a cached record: its tensors plus ~300 B of Python objects."""
    s = record.summary
    tensors = [t for t in (s.recent_items, s.recent_h, s.seeds, s.memory) if t is not None]
    return 300 + sum(t.numel() * t.element_size() for t in tensors)


class RecordCache:
    """Decoded user records, each served for at most `ttl_s` after it was read (cachetools' TTL + LRU), up to
    `max_bytes` in all; off when `ttl_s` is 0, so every request reads the newest row."""

    def __init__(self, ttl_s: float, max_bytes: int):
        self._cache: TTLCache | None = TTLCache(max_bytes, ttl_s, getsizeof=record_bytes) if ttl_s > 0 else None
        self._lock = threading.Lock()

    def get(self, user: str) -> UserRecord | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(user)

    def put(self, user: str, record: UserRecord) -> None:
        if self._cache is not None:
            with self._lock:
                try:
                    self._cache[user] = record
                except ValueError:  # larger than the whole budget: served, not kept
                    pass

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
        try:
            model.backend = resolve_backend(config.backend, model.device, model.cfg.head_dim)
        except ValueError as exc:
            raise UnknownModelError(f"cannot serve {config.ckpt} with backend {config.backend!r}: {exc}") from exc
        version = meta["model_version"]
        if config.expected_model_version and config.expected_model_version != version:
            raise UnknownModelError(f"checkpoint {config.ckpt} has model_version {version}, "
                                    f"expected {config.expected_model_version}")
        self.model: VistaModel = model
        self.vocab: ItemVocab = vocab
        self.model_version: str = version
        self.ranker, self.rerank_top, why = choose_ranker(model, meta, config)
        log.info("serving %s: %s", self.ranker, why, extra={"event": "ranker", "ranker": self.ranker,
                                                             "rerank_top": self.rerank_top, "reason": why,
                                                             "model_version": version})
        self.ranker_reason = why
        self.store = store
        self.cache = RecordCache(config.cache_ttl_s, int(config.cache_mb * 2**20))
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
            # the state blob only for a model whose memory readout reads it (8 KiB for two layers of 4 x 16²)
            rows = self.store.read(missing, self.model_version, with_state=self.model.cfg.memory_readout)
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
        summary = _float_summary(summary_from_rows([row], self.model))
        if (summary.seeds is None) == self.model.cfg.target_readout:
            raise ValueError(f"the row of user {row.user_id!r} {'lacks' if summary.seeds is None else 'holds'} "
                             f"seeds, but model {self.model_version} "
                             f"{'reads' if self.model.cfg.target_readout else 'does not read'} them")
        return UserRecord(summary, Freshness(events_seen=row.events_seen, last_event_ts=row.last_event_ts,
                                             updated_at=row.updated_at), cold=False)

    # ---- scoring --------------------------------------------------------------------------------
    def logits(self, summaries: list[UserSummary], candidates: list[torch.Tensor]
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One forward pass for all (summary, candidate rows) pairs (ragged lists padded with row 0) -> each
        request's scores and which of its candidates Δ reranked.

        The stack scores every candidate by u·e. When the whole model is served, Δ is added to the candidates
        it reranks: all of them, or for a list longer than `rerank_top` the top N by u·e (retrieve-then-rank,
        the protocol Δ was validated in). A score never depends on the other candidates; only whether a
        candidate is among the N reranked does, for lists longer than N."""
        width = max(int(c.numel()) for c in candidates)
        padded = torch.zeros(len(candidates), width, dtype=torch.long)
        for i, c in enumerate(candidates):
            padded[i, : c.numel()] = c
        dev = self.model.device
        recent_items = torch.cat([s.recent_items for s in summaries]).to(dev)
        recent_h = torch.cat([s.recent_h for s in summaries]).to(dev)
        memory = torch.cat([s.memory for s in summaries]).to(dev) if self.model.memory_read is not None else None
        lengths = torch.tensor([int(c.numel()) for c in candidates], device=dev)
        with torch.no_grad():
            emb = self.model.embedding.item(padded.to(dev))
            if self.ranker == STACK:
                out = self._base(recent_h[:, -1], emb, memory)
                reranked = torch.zeros(out.shape, dtype=torch.bool, device=dev)
            else:
                seeds = torch.cat([s.seeds for s in summaries]).to(dev)
                out, reranked = self._reranked(emb, seeds, recent_items, recent_h, lengths, memory)
        out, reranked = out.float().cpu(), reranked.cpu()
        return [(out[i, : c.numel()], reranked[i, : c.numel()]) for i, c in enumerate(candidates)]

    def _base(self, last_h: torch.Tensor, emb: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        """The score every candidate gets: u·e, plus the memory readout's term for a model that has one."""
        out = self.model.scorer.sequence_logits(last_h, emb) if self.model.cfg.sequence_readout else 0.0
        if memory is not None:
            out = out + self.model.memory_read(emb, memory)
        return out

    def _reranked(self, emb: torch.Tensor, seeds: torch.Tensor, recent_items: torch.Tensor,
                  recent_h: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The base score (u·e [+ the memory read]) for every candidate plus Δ for the (at most `rerank_top`)
        candidates each request reranks."""
        scorer, last_h = self.model.scorer, recent_h[:, -1]
        positions = torch.arange(emb.shape[1], device=emb.device)[None]
        if not self.model.cfg.sequence_readout:  # nothing to retrieve with: the whole model scores every candidate
            summary = UserSummary(seeds, recent_items, recent_h, memory)
            return self.model.logits(emb, summary), positions < lengths[:, None]
        base = self._base(last_h, emb, memory)
        n = min(self.rerank_top, emb.shape[1])
        # a list of at most N candidates: all of them (positions 0..N-1); a longer one: its top N by u·e
        top = base.masked_fill(positions >= lengths[:, None], -torch.inf).topk(n, dim=1).indices
        chosen = torch.where((lengths > n)[:, None], top, positions[:, :n].expand(len(base), -1))
        picked = emb.gather(1, chosen[..., None].expand(-1, -1, emb.shape[-1]))
        delta = scorer.delta(picked, seeds, recent_h, recent_items > 0)
        out = base.scatter(1, chosen, base.gather(1, chosen) + delta)
        reranked = torch.zeros(base.shape, dtype=torch.bool, device=base.device).scatter(1, chosen, True)
        return out, reranked & (positions < lengths[:, None])

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
        last_known = len(self.vocab.items)
        for r in requests:
            rows, oov = self.vocab.lookup(r.candidates)
            cand_rows.append(torch.tensor(rows, dtype=torch.long))
            known.append([row <= last_known for row in rows])  # OOV buckets sit after the known items
            stats.oov_candidates += oov
        scored = self.logits([records[r.user_id].summary for r in requests], cand_rows)
        for r, (s, reranked), flags in zip(requests, scored, known):
            order = ranked_order(s, reranked)[: r.top_k or len(r.candidates)]
            record = records[r.user_id]
            yield Ranking(r, self.model_version, order.tolist(), s[order].tolist(), flags, record.freshness,
                          self.ranker, int(reranked.sum()), record.cold)


STACK, RERANKED = "stack", "stack+target-attention"
DEFAULT_RERANK_TOP = 100


def choose_ranker(model: VistaModel, meta: dict, config: ScorerConfig) -> tuple[str, int, str]:
    """(what is served, the cascade's N, why). `auto` serves Δ only where it was measured to help: the
    checkpoint's `reranker.passed` (whole model >= stack on validation NDCG@10, models/training/rerank.py).
    A whole model trained jointly (no reranker record) is served whole, as it was validated."""
    verdict = meta.get("reranker")
    top = config.rerank_top or (verdict or {}).get("rerank_top", DEFAULT_RERANK_TOP)
    if not model.cfg.target_readout:
        return STACK, top, "the model has no target-attention readout"
    if config.ranker != "auto":
        return (STACK if config.ranker == "stack" else RERANKED), top, f"forced by the setting ranker={config.ranker}"
    if verdict is None:
        return RERANKED, top, "a whole model trained jointly (no separate reranker verdict)"
    measured = (f"validation NDCG@10 {verdict.get('val_NDCG@10', float('nan')):.4f} with Δ against "
                f"{verdict.get('stack_val_NDCG@10', float('nan')):.4f} for the stack")
    if verdict.get("passed"):
        return RERANKED, top, f"Δ passed validation ({measured})"
    return STACK, top, f"Δ failed validation ({measured}), so the stack alone is served"


def ranked_order(scores: torch.Tensor, reranked: torch.Tensor) -> torch.Tensor:
    """Positions by rank: the reranked candidates first, by score, then the rest by score (stable on ties)."""
    by_score = torch.sort(scores, descending=True, stable=True).indices
    if bool(reranked.all()) or not bool(reranked.any()):  # one tier: the score order is the rank order
        return by_score
    key = torch.where(reranked, 0, 1)
    return by_score[torch.sort(key[by_score], stable=True).indices]


def _float_summary(summary: UserSummary) -> UserSummary:
    """Stored fp16 tensors as fp32 (the scorer's compute type)."""
    seeds = summary.seeds.float() if summary.seeds is not None else None
    memory = summary.memory.float() if summary.memory is not None else None
    return UserSummary(seeds=seeds, recent_items=summary.recent_items, recent_h=summary.recent_h.float(),
                       memory=memory)


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
    ranker: str = STACK
    reranked: int = 0
    cold_start: bool = False

    def response(self) -> ScoreResponse:
        c = self.request.candidates
        items = [RankedItem(item_id=c[j], score=v, rank=i + 1, known=self.known[j])
                 for i, (j, v) in enumerate(zip(self.order, self.scores))]
        return ScoreResponse(user_id=self.request.user_id, model_version=self.model_version, items=items,
                             freshness=self.freshness, request_id=self.request.request_id, ranker=self.ranker,
                             reranked=self.reranked, cold_start=self.cold_start)

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
            "ranker": self.ranker,
            "reranked": self.reranked,
            "cold_start": self.cold_start,
        }
        if not all(math.isfinite(v) for v in self.scores):  # JSON has no NaN: a broken model must not answer
            raise ValueError(f"non-finite scores for user {self.request.user_id!r}")
        return orjson.dumps(body)
