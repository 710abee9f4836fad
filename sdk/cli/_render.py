"""Readable rendering of results and retrieval traces for the CLI and the demo (rich)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vptt.agents.results import PersonalizationResult
from vptt.sdk.cli._common import plain, printable


def _posts_table(result: PersonalizationResult, max_rows: int) -> Table:
    t = result.trace
    if t.entropy is None:  # BRAG ranks captions: no weights, entropy or budget
        title = f"posts ranked by cosine: top {t.k}"
    else:
        title = f"posts: H={t.entropy:.3f}  n_eff={t.n_eff:.2f}  K={t.k}  (tau={t.tau}, Q={t.total_budget})"
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("rank", justify="right")
    table.add_column("post")
    table.add_column("cos", justify="right")
    table.add_column("w", justify="right")
    for rank, cp in enumerate(t.chosen_posts[:max_rows], 1):
        table.add_row(str(rank), plain(cp.post_id), f"{cp.similarity:.3f}", f"{cp.weight:.4f}")
    if len(t.chosen_posts) > max_rows:
        table.add_row("…", f"{len(t.chosen_posts) - max_rows} more chosen posts", "", "")
    return table


def _categories_table(result: PersonalizationResult) -> Table:
    table = Table(title="categories (visit order) and quotas", title_justify="left", show_edge=False)
    for col in ("category", "priority", "Q^(k)", "supply", "quotas (post: q)"):
        table.add_column(col, justify="right" if col in ("priority", "Q^(k)", "supply") else "left")
    for c in result.trace.categories:
        quotas = ", ".join(f"{plain(pid)}: {q}" for pid, q in c.quotas.items()) or "-"
        table.add_row(plain(c.category), f"{c.priority:.3f}", str(c.budget), str(c.supply), quotas)
    return table


def _elements_table(result: PersonalizationResult) -> Table:
    table = Table(title="chosen elements (prompt order)", title_justify="left", show_edge=False)
    for col in ("element", "category", "post", "cos", "status"):
        table.add_column(col, justify="right" if col == "cos" else "left")
    for e in result.trace.elements:
        style = "" if e.status == "kept" else "dim"
        table.add_row(plain(e.text), plain(e.category), plain(e.post_id or "-"), f"{e.score:.3f}", e.status, style=style)
    return table


def render_result(result: PersonalizationResult, console: Console, *, trace: bool = True,
                  max_posts: int = 8) -> None:
    """Print the prompt and (optionally) a readable retrieval trace."""
    head = Text.assemble(("persona ", "bold"), printable(result.persona_id), ("   method ", "bold"),
                         printable(result.method), ("   query ", "bold"), printable(repr(result.query)))
    parts: list[object] = [head, Text(""), Text(printable(result.prompt), style="green")]
    if result.fallback:
        parts.append(Text(printable(f"fallback: {result.fallback}"), style="yellow"))
    comp = result.trace.composition
    if comp is not None:
        budget = f" / budget {comp.token_budget}" if comp.token_budget else ""
        parts.append(Text(f"{comp.tokens} tokens ({comp.tokenizer}){budget}; "
                          f"{result.timings_ms.get('total', 0):.1f} ms", style="dim"))
    console.print(Panel(Group(*parts), expand=True))  # type: ignore[arg-type]
    if not trace:
        return
    t = result.trace
    if t.chosen_posts:
        console.print(_posts_table(result, max_posts))
    if t.categories:
        console.print(_categories_table(result))
    if t.elements:
        console.print(_elements_table(result))
    if t.captions_used:
        console.print(Text(f"best of {len(t.captions_used)} ranked captions: " +
                           printable(t.captions_used[0][:160]) + "…", style="dim"))
