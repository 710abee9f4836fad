"""The ``vptt`` command line: every command group lives in this package (typer + rich stay here)."""

from vptt.sdk.cli.main import app

__all__ = ["app"]
