"""`vista presets`: the named model + training presets and what each stores per user."""

from __future__ import annotations

import typer


def stored_row_bytes(preset: str, num_items: int = 1682) -> dict[str, int]:
    """Blob bytes of one stored row under `preset` (a user with 30 events): what the worker writes per user,
    and what the scorer reads (everything but the recurrent state)."""
    import torch

    from models.preset import build_configs, load_preset
    from models.state import EventBatch
    from models.training.rerank import with_reranker
    from models.vista import VistaModel
    from stream.rows import rows_from_states

    cfg, _ = build_configs(preset, num_items)
    model = VistaModel(cfg).eval()
    if load_preset(preset).rerank is not None:  # the served model is the whole one: its rows hold seeds
        model = with_reranker(model)
    events = EventBatch(torch.randint(1, num_items + 1, (30,)), torch.zeros(30, dtype=torch.long),
                        torch.arange(30) * 60, torch.tensor([30]))
    with torch.no_grad():
        states = model.update(model.init_state(1), events)
        row = rows_from_states(["u"], "v", states, model.summarize(states))[0]
    blobs = {k: len(getattr(row, k) or b"") for k in ("state", "recent_items", "recent_h", "seeds")}
    return {**blobs, "stored": sum(blobs.values()), "scorer_reads": sum(blobs.values()) - blobs["state"]}


def presets() -> None:
    """List the presets (models/presets/*.yaml) with the bytes each stores per user."""
    from models.preset import load_preset, preset_names

    typer.echo(f"{'preset':<16} {'stored B/user':>13} {'scorer reads':>12}  description")
    for name in preset_names():
        size = stored_row_bytes(name)
        typer.echo(f"{name:<16} {size['stored']:>13,} {size['scorer_reads']:>12,}  {load_preset(name).description}")


def register(app: typer.Typer) -> None:
    app.command("presets")(presets)
