"""Helpers of the integration tests that need servers of their own: free ports, a private Cassandra."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.settings import InfraSettings


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def private_cassandra(shared: InfraSettings, data_dir: Path, **overrides: object) -> Iterator[InfraSettings]:
    """A Cassandra node of its own (ports, data dir, small heap, no auth) with the vista schema, stopped on
    exit: tests that take Cassandra down never touch the shared one."""
    from infra import cassandra

    settings = shared.replace(**{**dict(data_dir=data_dir, cassandra_contact_points="127.0.0.1",
                                        cassandra_port=free_port(), cassandra_storage_port=free_port(),
                                        cassandra_heap_mb=512, cassandra_username=None, cassandra_password=None,
                                        cassandra_ssl_cafile=None, startup_timeout_s=180), **overrides})
    try:
        cassandra.start(settings)
        cassandra.apply_schema(settings)
        yield settings
    finally:
        cassandra.stop(settings)
