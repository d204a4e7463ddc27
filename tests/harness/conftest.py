"""Tiny datasets the harness tests train on in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.training.data import encode, leave_one_out, load_dataset


def write_chain_csv(path: Path, users: int = 20, items: int = 30, length: int = 12) -> Path:
    """User u walks the item ring from u: the next item is always the successor of the last one."""
    lines = ["user_id,item_id,timestamp"]
    for u in range(users):
        for t in range(length):
            lines.append(f"u{u},i{(u + t) % items},{1000 + t}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def chain_csv(tmp_path: Path) -> Path:
    return write_chain_csv(tmp_path / "chain.csv")


@pytest.fixture
def chain_split(chain_csv: Path):
    ds = load_dataset(chain_csv)
    return ds, leave_one_out(encode(ds))
