"""Worker metrics are served by default (127.0.0.1:9464, configurable); a taken port is a clear error, and
closing frees the port."""

from __future__ import annotations

import urllib.request

import pytest

from stream.metrics import WorkerMetrics
from stream.worker import WorkerConfig
from tests.infra_helpers import free_port


def test_metrics_are_on_by_default() -> None:
    config = WorkerConfig(ckpt="m")
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 9464)


def test_a_taken_port_is_a_clear_error_and_close_frees_it() -> None:
    port = free_port()
    first = WorkerMetrics()
    first.serve(port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "vista_worker_" in body
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}.*--metrics-port"):
            WorkerMetrics().serve(port)
    finally:
        first.close()
    again = WorkerMetrics()
    again.serve(port)  # the port is free again
    again.close()
