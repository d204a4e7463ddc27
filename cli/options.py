"""CLI options generated from the pydantic configs, so a default or a help text is written once.

    @config_options(WorkerConfig, {"group_id": "--group", "batch_max_events": "--batch-events"})
    def worker(ckpt: Path = typer.Option(...), *, config: dict) -> None:
        WorkerConfig(ckpt=ckpt, **config)

Each named field becomes `--flag` with the field's default and description; the command receives the
values as `config` (a dict of field -> value), ready to pass to the config class.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel


def _cli_type(annotation: Any) -> Any:
    """A type typer can parse: `X | None` as Optional[X], a Literal of strings as str."""
    origin = get_origin(annotation)
    if origin in (types.UnionType, Union):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return Optional[_cli_type(inner[0])] if len(inner) == 1 else str
    if origin is Literal:
        return type(get_args(annotation)[0])
    return annotation


def _help(description: str | None, annotation: Any) -> str:
    choices = get_args(annotation) if get_origin(annotation) is Literal else ()
    text = description or ""
    return f"{text} ({' | '.join(map(str, choices))})" if choices else text


def config_options(model: type[BaseModel], flags: dict[str, str]) -> Callable[[Callable], Callable]:
    """Decorator: one option per field of `model` named in `flags` (field -> "--flag", or "--on/--off" for a
    bool), passed to the command as its `config` keyword argument."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "config"]
        generated = []
        for field, flag in flags.items():
            info = model.model_fields[field]
            default = ... if info.is_required() else info.get_default(call_default_factory=True)
            option = typer.Option(default, *flag.split(","), help=_help(info.description, info.annotation),
                                  show_default=default is not None)
            generated.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option,
                                               annotation=_cli_type(info.annotation)))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            config = {field: kwargs.pop(field) for field in flags}
            return command(*args, config=config, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + generated)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + generated}
        return wrapper

    return decorate
