"""``vptt personas``: list, show and delete stored personas."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vptt.core.errors import ConfigError, VPTTError
from vptt.sdk.cli._common import cli_errors, personalizer, plain, quiet

console = Console()
err = Console(stderr=True)
personas_app = typer.Typer(help="List, show, export and delete stored personas; add or remove posts.",
                           no_args_is_help=True)


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
        table.add_row(plain(pid), "" if d.age is None else str(d.age), plain(d.occupation),
                      plain(f"{d.city}, {d.country}".strip(", ")), str(len(p.posts)))
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
    console.print(f"[bold]{plain(p.persona_id)}[/bold]  {plain(p.card_text())}")
    for post in p.posts:
        console.print(f"  [cyan]{plain(post.post_id)}[/cyan] ({post.type}) {plain(post.caption[:100])}…")


@personas_app.command("delete")
@cli_errors
def personas_delete(persona_id: str) -> None:
    """Delete one persona and everything stored for it."""
    if not personalizer().store.delete(persona_id):
        err.print(f"[red]error:[/red] persona {plain(repr(persona_id))} not found")
        raise typer.Exit(1)
    console.print(f"deleted {plain(persona_id)}")


@personas_app.command("add-post")
@cli_errors
def personas_add_post(
        persona_id: str,
        file: Optional[Path] = typer.Argument(None, help="Post(s) as JSON (object or array) or JSONL; - for stdin."),
        caption: Optional[str] = typer.Option(None, help="Caption of a single post (instead of FILE)."),
        post_id: Optional[str] = typer.Option(None, help="Id of the single post (default: derived from the caption)."),
        post_type: str = typer.Option("activity", "--type", help="activity, appreciation, shared or selfie."),
        element: Optional[list[str]] = typer.Option(None, help="CATEGORY=ITEM (repeatable), e.g. lighting=soft dusk."),
        image: Optional[str] = typer.Option(None, help="Path or URI of the post's image.")) -> None:
    """Add (or replace, by post id) posts of a stored persona; only those posts are embedded."""
    from vptt.core.personas import parse_post, parse_posts

    if (file is None) == (caption is None):
        raise ConfigError("give either FILE (JSON/JSONL posts, - for stdin) or --caption")
    if file is not None:
        name = "<stdin>" if str(file) == "-" else str(file)
        text = sys.stdin.read() if str(file) == "-" else _read_text(file)
        posts = parse_posts(text, file=name)
    else:
        elements: dict[str, list[str]] = {}
        for pair in element or []:
            cat, sep, item = pair.partition("=")
            if not sep or not cat.strip() or not item.strip():
                raise ConfigError(f"--element takes CATEGORY=ITEM, got {pair!r}")
            elements.setdefault(cat.strip(), []).append(item.strip())
        pid = post_id or "post-" + hashlib.sha256(str(caption).encode()).hexdigest()[:10]
        posts = [parse_post({"post_id": pid, "type": post_type, "caption": caption, "elements": elements,
                             "image": image}, file="<options>", line=0)]
    store = personalizer().store
    embedded = 0
    for post in posts:
        embedded += store.add_post(persona_id, post).texts_embedded
    if not quiet():
        console.print(f"added {len(posts)} post(s) to {persona_id}; embedded {embedded} texts")


@personas_app.command("remove-post")
@cli_errors
def personas_remove_post(persona_id: str, post_id: str) -> None:
    """Remove one post of a stored persona (nothing is embedded)."""
    try:
        personalizer().store.remove_post(persona_id, post_id)
    except KeyError as exc:
        if isinstance(exc, VPTTError):
            raise
        raise ConfigError(f"persona {persona_id!r} has no post {post_id!r}; see `vptt personas show "
                          f"{persona_id}`") from None
    if not quiet():
        console.print(f"removed post {post_id} from {persona_id}")


@personas_app.command("export")
@cli_errors
def personas_export(persona_ids: Optional[list[str]] = typer.Argument(None, help="Ids to export (default all)."),
                    out: Path = typer.Option(Path("-"), "--out", "-o",
                                             help="JSONL file (written atomically); - for stdout.")) -> None:
    """Write stored personas as JSONL (the interchange format `vptt ingest` reads)."""
    from vptt.core.personas import dump_personas

    store = personalizer().store
    ids = persona_ids or store.list_ids()
    personas = [store.get(pid) for pid in ids]  # every id is checked before anything is written
    if str(out) == "-":
        for p in personas:
            sys.stdout.write(json.dumps(p.model_dump(mode="json"), ensure_ascii=False) + "\n")
        return
    n = dump_personas(personas, out)
    if not quiet():
        err.print(f"wrote {n} persona(s) to {out}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
