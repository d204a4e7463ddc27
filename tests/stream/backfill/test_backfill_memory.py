"""run_backfill without servers (rows in a dict): stop/resume at checkpoints, the handover stamp, bucketing."""

from __future__ import annotations

from pathlib import Path

from models.checkpoint import load_checkpoint
from stream.backfill import BackfillSettings, run_backfill
from stream.sources import FileSource
from tests.stream.backfill.conftest import file_events
from tests.fakes import MemoryProgress, MemoryStore
from tests.stream.util import ML100K, assert_rows_match, recompute


def _log(tmp_path: Path, lines: int) -> Path:
    path = tmp_path / "part.data"
    with ML100K.open() as src:
        path.write_text("".join(next(src) for _ in range(lines)))
    return path


def test_stopped_runs_resume_to_a_full_recompute(tmp_path: Path, checkpoint: Path) -> None:
    log = _log(tmp_path, 3000)
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store, progress = MemoryStore(), MemoryProgress()
    # tiny update calls and cache: many users continue across chunks and calls from stored rows
    cfg = BackfillSettings(chunk_events=600, cache_mb=0.2, batch_cells=1024, batch_users=64, progress_bar=False)
    first = run_backfill(model, vocab, version, FileSource(log), store, progress, settings=cfg, max_chunks=2)
    assert (first.status, first.records) == ("stopped", 1200)
    assert progress.read(first.job_id)["file:part.data"].position == 1200
    second = run_backfill(model, vocab, version, FileSource(log), store, progress, settings=cfg, max_seconds=0)
    assert (second.status, second.records, second.skipped) == ("stopped", 600, 0)
    last = run_backfill(model, vocab, version, FileSource(log), store, progress, settings=cfg)
    assert (last.status, last.records, last.resumed) == ("done", 1200, True)

    expected = recompute(model, vocab, version, file_events(log))
    stored = {u: store.rows.get((u, version)) for u in expected}
    assert_rows_match(stored, expected, model)


def test_file_rows_carry_the_handover_cut(tmp_path: Path, checkpoint: Path) -> None:
    log = _log(tmp_path, 500)
    model, vocab, meta = load_checkpoint(checkpoint)
    store, progress = MemoryStore(), MemoryProgress()
    report = run_backfill(model, vocab, meta["model_version"], FileSource(log), store, progress,
                          handover={"events:0": 10, "events:1": 0, "events:2": 7},
                          settings=BackfillSettings(chunk_events=128, progress_bar=False))
    # end offsets are exclusive; an empty partition (end 0) needs no stamp
    assert report.handover == {"events:0": 9, "events:2": 6}
    assert all({k: v for k, v in r.applied_offsets.items() if k.startswith("events:")} == report.handover
               for r in store.rows.values())
    # a resumed job keeps the cut it started with, whatever it is given now
    again = run_backfill(model, vocab, meta["model_version"], FileSource(log), store, progress,
                         handover={"events:0": 99}, settings=BackfillSettings(progress_bar=False))
    assert again.handover == {"events:0": 9, "events:2": 6}


def test_shards_split_the_users_and_together_equal_one_job(tmp_path: Path, checkpoint: Path) -> None:
    log = _log(tmp_path, 2000)
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store, progress = MemoryStore(), MemoryProgress()
    reports = [run_backfill(model, vocab, version, FileSource(log), store, progress,
                            settings=BackfillSettings(shards=2, shard=i, chunk_events=700, progress_bar=False))
               for i in (0, 1)]
    assert reports[0].job_id != reports[1].job_id and all(r.status == "done" for r in reports)
    assert reports[0].events + reports[1].events == 2000 and min(r.events for r in reports) > 0
    assert reports[0].users + reports[1].users == len({u for u, _ in store.rows})
    expected = recompute(model, vocab, version, file_events(log))
    assert_rows_match({u: store.rows.get((u, version)) for u in expected}, expected, model)
