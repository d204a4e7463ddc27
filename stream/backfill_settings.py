"""BackfillSettings: the tuning of one backfill run, in a torch-free module so the command line can build
its options from it without loading a model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kernels.dispatch import BACKEND_HELP, BackendChoice


class BackfillSettings(BaseModel):
    """Tuning of one backfill run (the CLI flags map 1:1 onto these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: int = Field(1, ge=1, description="split the users into this many shards by a hash of the user id; "
                        "each shard is its own resumable job (run one process or machine per shard)")
    shard: int = Field(0, ge=0, description="the shard this run backfills (0 .. shards-1)")
    rebuild_users: list[str] = Field(default_factory=list, description="rebuild only these users from the source, ignoring "
                                           "their stored rows (a quarantined, corrupt row); always a fresh job")
    only_users: list[str] = Field(default_factory=list, description="apply only these users' events, on top of "
                                  "their stored rows (the live part of a rebuild from a file)")
    chunk_events: int = Field(262_144, ge=1, description="records per chunk: bounds memory; rows written once per chunk")
    batch_cells: int = Field(16_384, ge=1, description="padded user x event cells per model.update call")
    min_fill: float = Field(0.75, gt=0, le=1, description="least real/padded share of an update call's cells")
    batch_users: int = Field(1024, ge=1, description="users per apply call: bounds the summarize intermediates")
    cache_mb: float = Field(256.0, ge=0, description="MiB of rows kept between chunks (LRU; ~8.4 KiB a row for the "
                            "general model)")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="abort when bad records exceed this share")
    seeds_dtype: Literal["float16", "int8q"] = Field("float16", description="storage type of the seeds blob")
    backend: BackendChoice = Field("auto", description=BACKEND_HELP)
    progress_bar: bool = Field(True, description="progress on stderr: a bar on a terminal, a line every 10 s otherwise")

    @model_validator(mode="after")
    def _shard_in_range(self) -> BackfillSettings:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} does not exist: shards are 0 .. {self.shards - 1}")
        if self.rebuild_users and self.only_users:
            raise ValueError("rebuild_users (from an empty state) and only_users (on top of the rows) exclude each other")
        return self
