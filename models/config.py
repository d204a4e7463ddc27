"""ModelConfig: every architectural choice of the VISTA model, validated, hashable into model_version."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Architecture of the causal-QLA VISTA model.

    The defaults are the `general` preset (models/presets/general.yaml), the configuration chosen on
    validation: of the two finalists, the QLA stack alone (sequence readout, linear attention, item std
    0.02, dropout 0.5) and the whole model (seeds + target attention, the `target` preset), the stack
    has the better mean validation rank over ML-100K, Beauty and M300 at equal budgets (ranks 1, 1, 1;
    mean best validation NDCG@10 0.1113 / 0.0251 / 0.1753 against 0.1109 / 0.0179 / 0.1645; docs/quality.md).
    Other presets, including `paper-faithful` for the ablation, are overrides of these defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_items: int = Field(ge=1, description="known items in the vocabulary (indices 1..num_items; 0 is padding)")
    oov_buckets: int = Field(default=64, ge=1, description="hashed buckets for item ids unseen in training")
    num_actions: int = Field(default=8, ge=1, description="action / rating vocabulary size")
    num_gap_buckets: int = Field(default=48, ge=2, description="log-time-gap buckets")
    action_embedding: bool = Field(default=True, description="add a learned action / rating embedding to each event "
                                   "(off where the data has one action: a shared learned offset then grows under Adam "
                                   "on every event and drowns the item signal; measured on the synthetic worlds)")
    gap_embedding: bool = Field(default=True, description="add a learned log-time-gap bucket embedding to each event")
    gap_bucket_scale: float = Field(default=2.0, gt=0, description="bucket = floor(scale * log1p(gap seconds))")
    dim: int = Field(default=64, ge=4, description="model width D")
    heads: int = Field(default=4, ge=1, description="heads H (head width d = D / H)")
    layers: int = Field(default=2, ge=1, description="history / seed layers L")
    target_layers: int = Field(default=2, ge=1, description="target-attention layers L_t")
    target_heads: int = Field(default=4, ge=1, description="heads of the candidate target attention")
    num_seeds: int = Field(default=32, ge=1, description="seed summary tokens K")
    recent: int = Field(default=0, ge=0, description="recent events R kept in the ring buffer and attended to by the "
                        "target readout (0: only the newest h^L, the user vector, is stored)")
    outer_phi: bool = Field(default=False, description="phi(M/n) instead of M/n in QLA reads (off: linear "
                           "attention, trained in the chunked form; ablation switch)")
    seed_self_term: bool = Field(default=False, description="paper's (phi(q)·phi(k)) v seed self term (ablation)")
    seed_norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    seed_weights: Literal["shared", "own"] = Field(default="own", description="seeds read layer l with their own "
                                                  "projections (chosen on ML-100K validation) or with the history "
                                                  "layer's W^l (the design note's form; ablation switch)")
    decay: bool = Field(default=True, description="learned-free fixed per-head decay gamma_h")
    decay_min: float = Field(default=0.8, gt=0, le=1, description="smallest per-head gamma when decay is on")
    sequence_readout: bool = Field(default=True, description="u = LayerNorm(h_T^L) term of the logit")
    memory_readout: bool = Field(default=False, description="each candidate also reads every layer's stored memory "
                                 "M^l/n with its own query (models/memory_read.py): a fixed-cost kernel sum over the "
                                 "whole history, for returns to long-dormant interests; the scorer then reads the "
                                 "stored state")
    memory_read_scale: float = Field(default=10.0, gt=0, description="the memory read is multiplied by this: M/n "
                                     "is a per-event average, so a past item's share of it is ~1/n. On a count task "
                                     "(3 habits x 10 among 500 events) scale 10 learned fastest and stayed stable; "
                                     "on the lifelong world scale 100 diverged (cut loss 35-41 after one epoch)")
    target_readout: bool = Field(default=False, description="target attention over seeds + recent events (the `target` "
                                "preset); off: rows store no seeds and the scorer reads u only")
    dropout: float = Field(default=0.5, ge=0, lt=1, description="training-only dropout on the event embedding "
                           "and each history layer's residual branch (a no-op in eval mode: serving is unaffected)")
    item_init_std: float = Field(default=0.02, gt=0)
    seed_init_std: float = Field(default=0.02, gt=0)
    recon_window: int = Field(default=16, ge=2, description="history items the reconstruction decoder predicts")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.dim % self.target_heads:
            raise ValueError(f"dim {self.dim} must be divisible by target_heads {self.target_heads}")
        if not (self.sequence_readout or self.target_readout or self.memory_readout):
            raise ValueError("at least one of sequence_readout / target_readout / memory_readout must be on")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def recent_slots(self) -> int:
        """Ring-buffer size actually stored: at least 1, since the newest h^L is the user vector u."""
        return max(self.recent, 1)

    @property
    def vocab_size(self) -> int:
        """Embedding rows: padding + known items + OOV buckets."""
        return 1 + self.num_items + self.oov_buckets
