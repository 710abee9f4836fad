"""``vptt store``: inspect, check, repair and migrate the persona store."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from vptt.sdk.cli._common import cli_errors, settings

console = Console()
err = Console(stderr=True)
store_app = typer.Typer(help="Inspect, check, repair and migrate the persona store.", no_args_is_help=True)


def _open(*, allow_legacy: bool = True) -> Any:
    from vptt.stores.factory import build_embedder, build_store

    s = settings()
    return build_store(s, build_embedder(s), allow_legacy=allow_legacy)


@store_app.command("check")
@cli_errors
def store_check(repair: bool = typer.Option(False, "--repair", help="Remove orphan vectors and dead writers' "
                                                                   "journals; re-embed missing vectors.")) -> None:
    """Look for orphan vectors (left by crashes or concurrent writers), missing vectors and dead writers.

    Exit code 0 when the store is healthy (or was repaired), 1 when problems remain.
    """
    store = _open()
    report = store.check(repair=repair)
    console.print(f"{report.location}: {report.personas} persona(s), {report.vectors} vector(s), "
                  f"{report.live_journals} writer(s) at work", highlight=False)
    for line in report.problems:
        console.print(f"  [yellow]found[/yellow] {line}", highlight=False)
    if report.repaired:
        console.print(f"repaired: removed {report.removed_vectors} orphan vector(s), re-embedded "
                      f"{report.reembedded_vectors} missing vector(s)", highlight=False)
        remaining = report.notes or report.foreign_embedder
        if remaining:
            raise typer.Exit(1)
        return
    if not report.ok:
        console.print("run `vptt store check --repair` to fix what can be fixed")
        raise typer.Exit(1)
    console.print("ok")


@store_app.command("migrate")
@cli_errors
def store_migrate(keep_old: bool = typer.Option(False, "--keep-old", help="Keep the old collections afterwards.")
                  ) -> None:
    """Convert a store written in the old layout (one Chroma collection per persona) to the shared layout.

    Nothing is embedded: the old vectors are reused. Safe to interrupt and run again.
    """
    from vptt.stores.chroma import ChromaPersonaStore
    from vptt.stores.chroma_legacy import migrate

    store = _open()
    if not isinstance(store, ChromaPersonaStore) or store.legacy is None:
        console.print(f"{store.location}: nothing to migrate", highlight=False)
        return
    report = migrate(store, keep_old=keep_old)
    console.print(f"{report.location}: migrated {len(report.migrated)} persona(s), {len(report.already)} were "
                  f"already migrated; re-embedded {report.texts_reembedded} text(s); deleted "
                  f"{report.old_collections_deleted} old collection(s)", highlight=False)
    for pid, why in report.skipped.items():
        err.print(f"[yellow]not migrated[/yellow] {pid!r}: {why}", highlight=False)
    if report.skipped:
        raise typer.Exit(1)
