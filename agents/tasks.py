"""Evaluation tasks: the paper's generation and editing prompts, and user-defined ones.

The paper evaluates two generation prompts ("A preferred outdoor spot", "A photo showing my next social media
post with my style and content"), a cultural-site prompt, and edits of a convention center, a garden and an
empty living room (Sec. 4.2, Fig. 2, Tables 7-10). Where the paper does not print a prompt verbatim (cultural
site, garden, living room) the wording below is this project's, in the style of the printed ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vptt.core.errors import ConfigError


class Task(BaseModel):
    """One prompt to personalize for every persona."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    query: str = Field(min_length=1)
    kind: Literal["generation", "editing"] = "generation"
    input_image: str | None = None


PRESETS: dict[str, Task] = {t.name: t for t in [
    Task(name="outdoor_spot", query="A preferred outdoor spot"),
    Task(name="social_post", query="A photo showing my next social media post with my style and content"),
    Task(name="cultural_site", query="A photo of a cultural site I would visit and share"),
    Task(name="convention_center", query="Here is a convention center. Add a preferred event", kind="editing"),
    Task(name="garden", query="Here is a garden. Add preferred elements to it", kind="editing"),
    Task(name="living_room", query="Here is an empty living room. Furnish and decorate it in my style",
         kind="editing"),
]}
"""The paper's tasks by name."""

PAPER_TABLE3 = ("social_post", "cultural_site", "garden", "living_room")
"""The four tasks of the paper's large-scale study (two generation, two editing; Tables 7-10)."""


def resolve_tasks(specs: Iterable[str | Task]) -> list[Task]:
    """Tasks from preset names, ``name=query`` / ``name:editing=query`` strings, a JSON file, or Tasks.

    Example:
        >>> [t.name for t in resolve_tasks(["outdoor_spot", "beach=A day at the beach"])]
        ['outdoor_spot', 'beach']
    """
    out: list[Task] = []
    for spec in specs:
        if isinstance(spec, Task):
            out.append(spec)
        elif spec in PRESETS:
            out.append(PRESETS[spec])
        elif "=" in spec:
            head, query = spec.split("=", 1)
            name, _, kind = head.partition(":")
            out.append(Task(name=name.strip(), query=query.strip(), kind=(kind or "generation")))  # type: ignore[arg-type]
        elif spec.endswith(".json") and Path(spec).exists():
            out.extend(Task.model_validate(t) for t in json.loads(Path(spec).read_text()))
        else:
            raise ConfigError(f"unknown task {spec!r}: use a preset ({', '.join(PRESETS)}), 'name=query', "
                              "'name:editing=query' or a JSON file of tasks")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    return out
