"""`vista` commands of the backfill group (filled in by its issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app (none yet)."""
