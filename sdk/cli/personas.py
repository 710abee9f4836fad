"""``vptt personas``: list, show and delete stored personas."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from vptt.sdk.cli._common import cli_errors, personalizer

console = Console()
err = Console(stderr=True)
personas_app = typer.Typer(help="List, show and delete stored personas.", no_args_is_help=True)


@personas_app.command("list")
@cli_errors
def personas_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List stored persona ids."""
    store = personalizer().store
    ids = store.list_ids()
    if as_json:
        console.print_json(json.dumps(ids))
        return
    table = Table("persona_id", "age", "occupation", "city", "posts", show_edge=False)
    for pid in ids:
        p = store.get(pid)
        d = p.demographics
        table.add_row(pid, "" if d.age is None else str(d.age), d.occupation, f"{d.city}, {d.country}".strip(", "),
                      str(len(p.posts)))
    console.print(table)
    console.print(f"{len(ids)} persona(s) in {store.location}", highlight=False)


@personas_app.command("show")
@cli_errors
def personas_show(persona_id: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show one persona."""
    p = personalizer().store.get(persona_id)
    if as_json:
        console.print_json(p.model_dump_json())
        return
    console.print(f"[bold]{p.persona_id}[/bold]  {p.card_text()}")
    for post in p.posts:
        console.print(f"  [cyan]{post.post_id}[/cyan] ({post.type}) {post.caption[:100]}…")


@personas_app.command("delete")
@cli_errors
def personas_delete(persona_id: str) -> None:
    """Delete one persona and everything stored for it."""
    if not personalizer().store.delete(persona_id):
        err.print(f"[red]error:[/red] persona {persona_id!r} not found")
        raise typer.Exit(1)
    console.print(f"deleted {persona_id}")
