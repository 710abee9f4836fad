"""What the ``vptt score ...`` commands share: their model options, input errors and output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from vptt.core.errors import VPTTError
from vptt.sdk.cli._common import printable


def device_option() -> Any:
    return typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps or auto.")


def dtype_option() -> Any:
    return typer.Option("float32", "--dtype", help="float32, float16 or bfloat16.")


def batch_option(default: int = 32) -> Any:
    return typer.Option(default, "--batch-size", help="Images per forward pass.")


def json_option() -> Any:
    return typer.Option(False, "--json", help="Print the result as JSON instead of a table.")


def out_option() -> Any:
    return typer.Option(None, "--out", help="Also write the JSON result to this file.")


@contextmanager
def input_errors() -> Iterator[None]:
    """A bad file, model or option ends the command with one ``error:`` line and exit code 2."""
    try:
        yield
    except (VPTTError, ValueError, OSError) as exc:
        typer.echo(f"error: {printable(exc)}", err=True)
        raise typer.Exit(code=2) from None


def emit(text: str, as_json: bool, table: Callable[[], None]) -> None:
    """Print the JSON ``text`` or draw the table."""
    if as_json:
        typer.echo(text)
    else:
        table()
