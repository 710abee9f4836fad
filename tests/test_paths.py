"""File names derived from ids: no traversal, no collision, readable (vptt.core.paths)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from vptt.agents.generators.base import save_png
from vptt.agents.persona_gen import render_persona
from vptt.core.models import Persona
from vptt.core.paths import id_to_filename, path_for_id
from vptt.sdk.bench_worker import image_relpath

NASTY = ["../../x", "/etc/passwd", "..", ".", "", "a b", "a_b", "a/b", "a\\b", "a\x00b", "Alice", "alice",
         "ALICE", "CON", "con", "nul.txt", "-rf", ".hidden", "x.", "x" * 300, "x" * 299, "é", "e\u0301",
         "a\ud800b", "~", "a~b", "a_b~0123456789abcdef", "日本語", "tab\tnew\nline", "a..b"]


def test_safe_ids_are_kept() -> None:
    for s in ("p01_kyoto_ceramicist", "vprag", "outdoor_spot", "persona-7.v2", "_x"):
        assert id_to_filename(s) == s


def test_no_two_ids_share_a_name_even_case_insensitively() -> None:
    names = [id_to_filename(s) for s in NASTY]
    assert len({n.lower() for n in names}) == len(NASTY)  # distinct on a case-insensitive file system too


@pytest.mark.parametrize("value", NASTY)
def test_names_are_plain_components(value: str) -> None:
    name = id_to_filename(value)
    assert re.fullmatch(r"[A-Za-z0-9_.~-]+", name) and len(name) <= 80
    assert name not in (".", "..") and not name.startswith((".", "-")) and not name.endswith((".", " "))
    assert os.sep not in name and "/" not in name and "\\" not in name
    assert name.split(".")[0].lower() not in ("con", "nul", "prn", "aux")


def test_encoded_name_is_readable_and_deterministic() -> None:
    assert id_to_filename("Alice Smith").startswith("Alice_Smith~")
    assert id_to_filename("a b") == id_to_filename("a b") != id_to_filename("a_b")


def test_path_for_id_stays_under_root(tmp_path: Path) -> None:
    for v in NASTY:
        p = path_for_id(tmp_path, v, v, suffix=".png")
        assert p.resolve().is_relative_to(tmp_path.resolve()) and len(p.relative_to(tmp_path).parts) == 2
    with pytest.raises(ValueError, match="suffix"):
        path_for_id(tmp_path, "a", suffix="/../x")
    with pytest.raises(TypeError, match="string"):
        id_to_filename(None)  # type: ignore[arg-type]


def test_bench_image_paths_do_not_collide() -> None:
    paths = {image_relpath(pid, "t", "m") for pid in ("a b", "a_b", "a/b", "../../x", "A_B")}
    assert len(paths) == 5 and all(".." not in p.split("/") for p in paths)


def test_save_png_stems_do_not_collide(tmp_path: Path) -> None:
    img = Image.new("RGB", (2, 2))
    paths = {save_png(img, tmp_path, s) for s in ("a b-1", "a_b-1", "a/b-1", "../../../x")}
    assert len(paths) == 4 and all(p.parent == tmp_path for p in paths)


class _Gen:
    supports_edit = False

    def generate(self, prompt: str, *, seed: int, init_image: object = None) -> object:
        return type("R", (), {"image": Image.new("RGB", (4, 4))})()


def _persona(pid: str, post_ids: list[str]) -> Persona:
    return Persona.model_validate({"persona_id": pid, "posts": [
        {"post_id": q, "caption": f"caption {i}"} for i, q in enumerate(post_ids)]})


@pytest.mark.parametrize("pid", ["../../escaped", "/tmp/abs-escape", "..", "a/../../b"])
def test_render_persona_never_writes_outside_out_dir(tmp_path: Path, pid: str) -> None:
    out = tmp_path / "out"
    res = render_persona(_persona(pid, ["portrait", "a b", "a_b", "a/b", "../../../p"]), _Gen(), out)
    written = [Path(res.portrait), *map(Path, res.images.values())]
    assert not res.failures and len(set(written)) == 6  # the portrait and five posts: six distinct files
    assert all(p.resolve().is_relative_to(out.resolve()) and p.is_file() for p in written)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.resolve().is_relative_to(out.resolve())]
    assert outside == [] and not Path("/tmp/abs-escape").exists()
