"""Shared test helpers: relative error as the design note defines it, random event streams."""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.state import EventBatch
from models.vista import VistaModel

DATA_DIR = "../shared/data"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ over the whole tensor (0 when both are 0)."""
    a, b = a.double(), b.double()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


def small_model(seed: int = 0, **overrides) -> VistaModel:
    torch.manual_seed(seed)
    # the whole model (seeds + target attention: the `target` preset) unless a test turns it off, so that the
    # invariants cover the seeds too; the other fields are the defaults (the `general` preset)
    cfg = dict(num_items=40, dim=32, heads=4, layers=2, target_layers=2, num_seeds=8, recent=6, oov_buckets=4,
               target_readout=True)
    cfg.update(overrides)
    model = VistaModel(ModelConfig(**cfg)).eval()
    # W_r starts at zero in training (target readout off at init); give it weights so that tests of
    # scoring exercise the target-attention path too
    torch.nn.init.normal_(model.scorer.w_r.weight, std=0.2)
    if model.memory_read is not None:  # likewise the memory readout's zero-initialized W_o
        for out in model.memory_read.out:
            torch.nn.init.normal_(out.weight, std=0.2)
    return model


def random_sequences(n_users: int, max_len: int, num_items: int, generator: torch.Generator,
                     min_len: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
    """Per user (items, actions, timestamps) with increasing timestamps (ties allowed)."""
    out = []
    for _ in range(n_users):
        n = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        items = torch.randint(1, num_items + 1, (n,), generator=generator).tolist()
        actions = torch.randint(0, 6, (n,), generator=generator).tolist()
        stamps = torch.randint(0, 100_000, (n,), generator=generator).cumsum(0).tolist()
        out.append((items, actions, stamps))
    return out


def batch_of(seqs: list[tuple[list[int], list[int], list[int]]]) -> EventBatch:
    return EventBatch.from_sequences(seqs)


def encoded_sequences(n: int, length: int, num_items: int) -> list:
    """n training sequences of `length` random items (one action, a minute apart), fixed by seed 0."""
    from models.training.data import EncodedSequence

    g = torch.Generator().manual_seed(0)
    return [EncodedSequence(user=f"u{i}", items=torch.randint(1, num_items + 1, (length,), generator=g),
                            actions=torch.zeros(length, dtype=torch.long),
                            timestamps=torch.arange(length, dtype=torch.long) * 60) for i in range(n)]
