"""The `vista` command line: one entry point, one module per command group.

Each `cli/*_cmd.py` module exposes `register(app)`; heavy imports (torch,
drivers) stay inside the command bodies so `vista --help` is instant.
"""

from __future__ import annotations

import typer

from cli import (backfill_cmd, experiment_cmd, infra_cmd, preset_cmd, serve_cmd, stream_cmd, train_cmd,
                 versions_cmd)

app = typer.Typer(
    name="vista",
    help="vista-stream: lifelong user-history summaries (VISTA) kept fresh from Kafka, stored in Cassandra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (train_cmd, preset_cmd, infra_cmd, stream_cmd, serve_cmd, backfill_cmd, experiment_cmd,
               versions_cmd):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
