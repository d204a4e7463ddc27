"""Logging for the long-running commands (worker, scorer): one JSON object per line, quiet driver loggers.

A line is {"time", "level", "logger", "message", ...fields}: events logged with `extra=` fields (the
worker's `event` and its numbers) come out as JSON keys, so a log shipper needs no parsing rules.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str) -> None:
    """Root logger at `level` with the JSON formatter; kafka-python and the Cassandra driver only speak up
    when it matters."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.ERROR)
