"""Checkpoints: safetensors weights + JSON config and vocabulary; model_version = hash of all three.

The version keys every stored row, so it must change exactly when the served function can: it hashes
FORMAT_VERSION, the architecture fields that differ from their defaults, the vocabulary and every weight.
Adding a config field with a default (one that keeps old models as they were) therefore keeps every
version, and stored rows are not orphaned. Changing an existing field's default, or what a field means,
must bump FORMAT_VERSION.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.config import ModelConfig
from models.vista import VistaModel
from models.vocab import ItemVocab

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
META = "meta.json"
FORMAT_VERSION = 2  # 1: the full config dump; 2: fields differing from their defaults


def architecture_json(cfg: ModelConfig) -> str:
    """The config as hashed: fields at their default are left out, keys sorted."""
    return json.dumps(cfg.model_dump(mode="json", exclude_defaults=True), sort_keys=True)


def model_version(model: VistaModel, vocab: ItemVocab) -> str:
    """16 hex chars of sha256 over the format version, config, vocabulary and every weight (name, dtype,
    shape, bytes)."""
    digest = hashlib.sha256()
    digest.update(f"vista-format-{FORMAT_VERSION}|".encode())
    digest.update(architecture_json(model.cfg).encode())
    digest.update(json.dumps({"items": vocab.items, "oov": vocab.oov_buckets}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def save_checkpoint(directory: str | Path, model: VistaModel, vocab: ItemVocab, meta: dict | None = None) -> str:
    """Write the checkpoint; returns its model_version."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS))
    (out / CONFIG).write_text(model.cfg.model_dump_json(indent=2))
    (out / VOCAB).write_text(json.dumps({"items": vocab.items, "oov_buckets": vocab.oov_buckets}))
    version = model_version(model, vocab)
    (out / META).write_text(json.dumps({"model_version": version, **(meta or {})}, indent=2, default=str))
    return version


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[VistaModel, ItemVocab, dict]:
    """Load (model in eval mode, vocab, meta). Refuses a checkpoint whose files disagree with its recorded version."""
    src = Path(directory)
    for name in (WEIGHTS, CONFIG, VOCAB):
        if not (src / name).exists():
            raise FileNotFoundError(f"checkpoint {src} is missing {name}")
    cfg = ModelConfig.model_validate_json((src / CONFIG).read_text())
    vocab_data = json.loads((src / VOCAB).read_text())
    vocab = ItemVocab(vocab_data["items"], vocab_data["oov_buckets"])
    model = VistaModel(cfg)
    model.load_state_dict(load_file(str(src / WEIGHTS)), strict=True)
    model.eval().to(device)
    meta = json.loads((src / META).read_text()) if (src / META).exists() else {}
    actual = model_version(model, vocab)
    if meta.get("model_version", actual) != actual:
        raise ValueError(f"checkpoint {src}: recorded model_version {meta['model_version']} != computed {actual}")
    meta["model_version"] = actual
    return model, vocab, meta
