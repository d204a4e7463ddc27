"""Benchmarks: timings with JSON output and plots (never in tests)."""
