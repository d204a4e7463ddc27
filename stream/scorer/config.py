"""ScorerConfig: how the scorer loads its model, bounds its inputs, caches rows and batches requests.

Its own module, free of torch, so the command line can build its options from it without loading a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kernels.dispatch import BACKEND_HELP, BackendChoice
from schemas.requests import DEFAULT_MAX_CANDIDATES


class ScorerConfig(BaseModel):
    """How the scorer loads its model, bounds its inputs, caches rows and batches requests."""

    model_config = ConfigDict(extra="forbid")

    ckpt: Path = Field(description="checkpoint directory (models/checkpoint.py); its model_version keys the rows")
    expected_model_version: str | None = Field(None, description="pin: serve this model_version (a checkpoint "
                                               "of it must be given) whatever is promoted; None = serve the promoted "
                                               "version and follow new promotions")
    version_poll_s: float = Field(10.0, ge=0, description="seconds between reads of the promoted version "
                                  "(`vista versions promote`); 0 = read it at start only")
    ranker: Literal["auto", "stack", "reranked"] = Field(
        "auto", description="'auto': the whole model (stack + target attention Δ) only if the checkpoint records "
        "that Δ passed validation, else the stack's u·e alone; 'stack' or 'reranked' force one (a model without "
        "the target readout is always the stack)")
    rerank_top: int | None = Field(None, ge=1, description="a request with more candidates is served as "
                                   "retrieve-then-rank: u·e orders all, Δ reorders the top N, which rank first "
                                   "(None: the N Δ was trained and validated for, else 100)")
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    backend: BackendChoice = Field("auto", description=BACKEND_HELP)
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = torch default)")
    max_candidates: int = Field(DEFAULT_MAX_CANDIDATES, ge=1, description="candidates allowed per request")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="request bodies larger than this are refused (413) "
                                "before they are read whole")
    api_key: SecretStr | None = Field(None, description="if set, /v1/score and /v1/items need the header "
                                      "'Authorization: Bearer <key>' (default: env VISTA_SCORER_API_KEY)")
    cache_ttl_s: float = Field(0.0, ge=0, description="serve a cached row for at most this long (0 = no cache)")
    cache_mb: float = Field(256.0, gt=0, description="MiB of decoded rows the cache holds (LRU within the TTL; "
                            "a general-model row is ~3 KiB decoded, a target-model row ~9 KiB)")
    batch_wait_ms: float = Field(2.0, ge=0, description="how long the first request of a batch waits for company")
    batch_max_requests: int = Field(64, ge=1, description="requests scored in one forward pass at most")
