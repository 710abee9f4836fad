"""Evaluation tasks: the paper's generation and editing prompts, and user-defined ones.

The paper evaluates two generation prompts ("A preferred outdoor spot", "A photo showing my next social media
post with my style and content"), a cultural-site prompt, and edits of a convention center, a garden and an
empty living room (Sec. 4.2, Fig. 2, Tables 7-10). Where the paper does not print a prompt verbatim (cultural
site, garden, living room) the wording below is this project's, in the style of the printed ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vptt.core.checks import check_query, explain_validation
from vptt.core.errors import ConfigError


class Task(BaseModel):
    """One prompt to personalize for every persona."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    query: str = Field(min_length=1)
    kind: Literal["generation", "editing"] = "generation"
    input_image: str | None = None

    @field_validator("query")
    @classmethod
    def _valid_text(cls, v: str) -> str:
        return check_query(v)


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


def _task(data: object, where: str) -> Task:
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain_validation(exc, f"task {where!r}") + "; write tasks as 'name=query' or "
                          "'name:editing=query' with a name of letters, digits and _.-") from None


def _tasks_file(path: Path) -> list[Task]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a JSON file of tasks ({type(exc).__name__}: {exc}); write a list of "
                          '{"name": ..., "query": ..., "kind": "generation"|"editing"} objects') from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: must hold a JSON list of task objects, got {type(data).__name__}")
    return [_task(t, f"{path}[{i}]") for i, t in enumerate(data)]


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
        elif not isinstance(spec, str):
            raise ConfigError(f"a task must be a preset name, 'name=query' or a Task; got {type(spec).__name__}")
        elif spec in PRESETS:
            out.append(PRESETS[spec])
        elif "=" in spec:
            head, query = spec.split("=", 1)
            name, _, kind = head.partition(":")
            out.append(_task({"name": name.strip(), "query": query.strip(), "kind": kind.strip() or "generation"},
                             spec))
        elif spec.endswith(".json") and Path(spec).exists():
            out.extend(_tasks_file(Path(spec)))
        else:
            raise ConfigError(f"unknown task {spec!r}: use a preset ({', '.join(PRESETS)}), 'name=query', "
                              "'name:editing=query' or a JSON file of tasks")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    return out


def with_task_images(tasks: Sequence[Task], images: Mapping[str, str | os.PathLike[str]]) -> list[Task]:
    """``tasks`` with the input images of editing tasks set from ``{task name: image path}``.

    One shared base image per editing task, as in the paper ("Here is a convention center. ..."). Paths are
    made absolute so workers in other directories find them.

    Raises:
        ConfigError: a name that is not one of ``tasks``, a generation task, or a missing file.

    Example:
        >>> with_task_images([PRESETS["outdoor_spot"]], {})[0].input_image is None
        True
    """
    by_name = {t.name: t for t in tasks}
    for name, path in images.items():
        if name not in by_name:
            raise ConfigError(f"--task-image names task {name!r}, which is not in this run "
                              f"(tasks: {', '.join(by_name)})")
        if by_name[name].kind != "editing":
            raise ConfigError(f"task {name!r} is a generation task; only editing tasks take an input image")
        if not Path(path).is_file():
            raise ConfigError(f"input image for task {name!r} not found: {path}")
    return [t.model_copy(update={"input_image": str(Path(images[t.name]).resolve())})
            if t.name in images else t for t in tasks]


def check_task_images(tasks: Sequence[Task], *, generating: bool) -> None:
    """Fail early, before any work, when an editing task cannot be run or judged as one.

    With an image generator every editing task needs its input image (else it would silently become a
    text-to-image task and the judge could not show the original); every given input image must open.

    Raises:
        ConfigError: naming the task and how to give its image.
    """
    for t in tasks:
        if t.kind == "editing" and t.input_image is None and generating:
            raise ConfigError(f"editing task {t.name!r} has no input image to edit: pass --task-image "
                              f"{t.name}=PATH (Python: task_images={{{t.name!r}: PATH}} or "
                              "Task(..., input_image=PATH))")
        if t.input_image is not None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(t.input_image) as im:
                    im.verify()
            except (OSError, UnidentifiedImageError) as exc:
                raise ConfigError(f"input image of task {t.name!r} cannot be read: {t.input_image} ({exc})") \
                    from None
