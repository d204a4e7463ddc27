"""Logging for the long-running commands (worker, scorer): one format, quiet driver loggers."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Root logger at `level`; kafka-python and the Cassandra driver only speak up when it matters."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.ERROR)
