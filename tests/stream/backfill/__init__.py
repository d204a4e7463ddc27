"""Tests of the backfill (stream/backfill.py, stream/sources.py, vista backfill)."""
