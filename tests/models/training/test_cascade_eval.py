"""The retrieve-then-rank evaluation (`vista_score_fn(rerank_top=N)`): the sequence readout orders the catalog,
the whole model reorders its top N above the rest. Pure logic, tiny model; exact orders, no tolerance."""

from __future__ import annotations

import pytest
import torch

from models.training.data import EncodedSequence, to_batch
from models.training.evaluate import vista_score_fn
from models.vocab import ItemVocab
from tests.helpers import small_model

NUM_ITEMS = 40


def _histories(n: int = 5) -> list[EncodedSequence]:
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        length = 4 + 3 * i
        out.append(EncodedSequence(user=f"u{i}", items=torch.randint(1, NUM_ITEMS + 1, (length,), generator=g),
                                   actions=torch.zeros(length, dtype=torch.long),
                                   timestamps=torch.arange(length, dtype=torch.long) * 60))
    return out


def test_cascade_reorders_the_retrieved_top_n_by_the_whole_model_and_keeps_the_rest_in_retrieval_order() -> None:
    model = small_model()
    vocab = ItemVocab.build(range(NUM_ITEMS), oov_buckets=4)
    histories = _histories()
    full = vista_score_fn(model, vocab)(histories)
    n = 7
    cascade = vista_score_fn(model, vocab, rerank_top=n)(histories)
    with torch.no_grad():
        states = model.update(model.init_state(len(histories)), to_batch(histories))
        u = model.scorer.user_vector(model.summarize(states).last_h)
        retrieval = (u @ model.embedding.item(vocab.known_indices()).T).float()
    for row in range(len(histories)):
        retrieved = set(retrieval[row].topk(n).indices.tolist())
        order = cascade[row].argsort(descending=True).tolist()
        assert set(order[:n]) == retrieved, "the top N of the cascade are the retrieved items"
        assert order[:n] == sorted(retrieved, key=lambda j: -full[row, j].item()), "ordered by the whole model"
        rest = order[n:]
        assert rest == sorted(rest, key=lambda j: -retrieval[row, j].item()), "the rest in retrieval order"
    torch.testing.assert_close(vista_score_fn(model, vocab, rerank_top=NUM_ITEMS)(histories), full)


def test_cascade_needs_the_sequence_readout() -> None:
    model = small_model(sequence_readout=False)
    with pytest.raises(ValueError, match="sequence readout"):
        vista_score_fn(model, ItemVocab.build(range(NUM_ITEMS), oov_buckets=4), rerank_top=5)
