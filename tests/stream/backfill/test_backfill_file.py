"""File backfills against the real Cassandra: equal to a full recompute, idempotent, resumable after a kill,
malformed lines reported with their line numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from schemas.codec import decode_tensor
from stream.backfill import BackfillError, BackfillSettings, default_job_id, run_backfill
from stream.sources import FileSource
from stream.store import ProgressStore, SummaryStore
from tests.stream.backfill.conftest import file_events
from tests.stream.util import ML100K, assert_rows_match, recompute, unique

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_ml100k_file_backfill_equals_full_recompute_and_reruns_change_nothing(
        cassandra_session, checkpoint: Path, ml100k_file_events) -> None:
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store, progress = SummaryStore(cassandra_session), ProgressStore(cassandra_session)
    # a cache smaller than the user count: most users continue from the row read back from Cassandra
    cfg = BackfillSettings(chunk_events=16_384, cache_mb=1.0, progress_bar=False)
    report = run_backfill(model, vocab, version, FileSource(ML100K), store, progress, settings=cfg)
    assert (report.status, report.events, report.applied, report.users, report.bad) == ("done", 100_000, 100_000, 943, 0)
    assert report.chunks == 7 and report.handover == {}

    expected = recompute(model, vocab, version, ml100k_file_events)
    stored = store.read(expected, version)
    worst = assert_rows_match(stored, expected, model)
    print(f"worst errors vs full recompute: {worst}; report: {report.seconds:.1f}s {report.events_per_s:,.0f} ev/s")
    last_line = {}
    for line, e in enumerate(ml100k_file_events, start=1):  # u.data has no header and no bad lines
        last_line[e.user_id] = line
    assert all(stored[u].applied_offsets == {"file:u.data": last_line[u]} for u in expected)
    shard = progress.read(report.job_id)["file:u.data"]
    assert (shard.status, shard.position, shard.events) == ("done", 100_000, 100_000)

    # rerunning the finished job reads nothing and writes nothing
    again = run_backfill(model, vocab, version, FileSource(ML100K), store, progress, settings=cfg)
    assert again.resumed and (again.status, again.records, again.rows_written) == ("done", 0, 0)
    # even a new job over the same file (progress lost) applies nothing: every event is in the rows already
    fresh = run_backfill(model, vocab, version, FileSource(ML100K), store, progress, settings=cfg, job_id=unique("job"))
    assert (fresh.applied, fresh.skipped, fresh.rows_written) == (0, 100_000, 0)
    after = store.read(expected, version)
    assert all(after[u].updated_at == stored[u].updated_at and after[u].state == stored[u].state for u in expected)


def test_killed_backfill_resumes_without_redoing_or_double_applying(
        tmp_path: Path, cassandra_session, checkpoint: Path) -> None:
    log = tmp_path / "ml30k.data"
    with ML100K.open() as src:
        log.write_text("".join(next(src) for _ in range(30_000)))
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    source = FileSource(log)
    job = default_job_id(version, source)
    progress = ProgressStore(cassandra_session)

    out = (tmp_path / "backfill.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "backfill", str(log), "--ckpt", str(checkpoint),
                             "--chunk-events", "1000", "--no-handover", "--no-progress"],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while True:
            shard = progress.read(job).get(source.shard)
            if shard is not None and shard.position >= 3000:
                break
            assert proc.poll() is None, (tmp_path / "backfill.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the backfill made no checkpoint in 180 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    killed_at = progress.read(job)[source.shard]
    assert killed_at.status == "running" and 3000 <= killed_at.position < 30_000, killed_at

    report = run_backfill(model, vocab, version, source, SummaryStore(cassandra_session), progress,
                          settings=BackfillSettings(chunk_events=8192, progress_bar=False))
    assert report.resumed and report.status == "done"
    assert report.records == 30_000 - killed_at.position  # nothing before the checkpoint was read again
    # rows written after the checkpoint but before the kill are skipped, not applied twice
    print(f"killed at line {killed_at.position}; resumed: applied {report.applied}, skipped {report.skipped}")
    expected = recompute(model, vocab, version, file_events(log))
    assert_rows_match(SummaryStore(cassandra_session).read(expected, version), expected, model)


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: Path, cassandra_session, checkpoint: Path) -> None:
    good = ML100K.read_text().splitlines()[:300]
    lines = list(good)
    bad = {4: "196\t242\t3", 50: "196\t242\tthree\t881250949", 120: "", 200: "7\t8\t9\t-1"}
    for line_no in sorted(bad):
        lines.insert(line_no - 1, bad[line_no])
    log = tmp_path / "dirty.data"
    log.write_text("\n".join(lines) + "\n")
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store, progress = SummaryStore(cassandra_session), ProgressStore(cassandra_session)
    bad_out = tmp_path / "bad.jsonl"

    report = run_backfill(model, vocab, version, FileSource(log), store, progress, bad_records_path=bad_out,
                          settings=BackfillSettings(chunk_events=100, max_bad_fraction=0.02, progress_bar=False))
    assert report.status == "done" and report.events == 300 and report.bad == 3  # line 120 is blank: not a record
    assert [(b["location"], b["reason"]) for b in report.bad_examples] == [
        ("dirty.data:4", "wrong_field_count"), ("dirty.data:50", "wrong_type"), ("dirty.data:200", "out_of_range")]
    assert report.bad_by_reason == {"wrong_field_count": 1, "wrong_type": 1, "out_of_range": 1}
    written = [json.loads(x) for x in bad_out.read_text().splitlines()]
    assert [(w["location"], w["raw"]) for w in written] == [
        ("dirty.data:4", bad[4]), ("dirty.data:50", bad[50]), ("dirty.data:200", bad[200])]
    assert progress.read(report.job_id)["file:dirty.data"].bad_lines == 3
    expected = recompute(model, vocab, version, file_events(log))
    stored = store.read(expected, version)
    assert_rows_match(stored, expected, model)
    # offsets are the file's own line numbers, bad lines included
    assert stored["196"].applied_offsets == {"file:dirty.data": 1}  # user 196 is on line 1 only
    assert decode_tensor(stored["196"].recent_items).tolist()[-1] == vocab.index("242")

    # over the allowed share: a clear error naming the lines (the good rows before it are kept)
    with pytest.raises(BackfillError, match=r"3 of 303 records are bad.*dirty.data:4 wrong_field_count"):
        run_backfill(model, vocab, version, FileSource(log), store, progress, job_id=unique("job"),
                     settings=BackfillSettings(chunk_events=100, max_bad_fraction=0.005, progress_bar=False))


def test_cli_prints_the_summary_and_exits_2_on_too_many_bad_lines(tmp_path: Path, checkpoint: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    log = tmp_path / "small.csv"
    log.write_text("user_id,item_id,timestamp,action\n" + "".join(f"u{i % 7},{1 + i % 50},{1000 + i},1\n" for i in range(400))
                   + "u1,2,not-a-time,1\n")
    common = [str(log), "--ckpt", str(checkpoint), "--no-handover", "--no-progress", "--chunk-events", "128"]
    ok = CliRunner().invoke(app, ["backfill", *common, "--job-id", unique("job")])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert (summary["status"], summary["events"], summary["users"], summary["bad"]) == ("done", 400, 7, 1)
    assert summary["bad_examples"][0]["location"] == "small.csv:402" and summary["events_per_s"] > 0
    strict = CliRunner().invoke(app, ["backfill", *common, "--job-id", unique("job"), "--max-bad-fraction", "0"])
    assert strict.exit_code == 2 and "small.csv:402 wrong_type" in strict.output
