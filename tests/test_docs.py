"""The README and docs/ stand alone: generated parts are current, links resolve, nothing points outside."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vptt.core.settings import VPTTSettings, fill_settings_table, settings_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_settings_table_is_current() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert fill_settings_table(text) == text, "docs/configuration.md is stale: run `make docs`"


def test_settings_table_names_every_setting() -> None:
    table = settings_table()
    for name in VPTTSettings.model_fields:
        assert f"`VPTT_{name.upper()}`" in table


def test_fill_replaces_only_between_markers() -> None:
    doc = "before\n<!-- settings-table: x -->\nOLD-TABLE\n<!-- /settings-table -->\nafter\n"
    filled = fill_settings_table(doc)
    assert filled.startswith("before\n<!-- settings-table: x -->\n| variable |")
    assert filled.endswith("<!-- /settings-table -->\nafter\n") and "OLD-TABLE" not in filled


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_never_point_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "DESIGN.md" not in text and "STYLE.md" not in text


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        assert file.exists(), f"{path.relative_to(ROOT)} links to missing {target}"
        assert ROOT in file.parents or file == ROOT, f"{path.relative_to(ROOT)} links outside: {target}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make test" in ci


def test_readme_cli_commands_exist() -> None:
    """Every `vptt <group> <command>` the README shows is a real command."""
    from typer.main import get_command

    from vptt.sdk.cli.main import app

    root = get_command(app)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in re.findall(r"^\s*vptt [^\n]*", readme, flags=re.M):
        words = [w for w in shlex.split(line.split("#")[0].rstrip("\\ ")) if not w.startswith("-")][1:]
        cmd = root
        for word in words:
            sub = getattr(cmd, "commands", {}).get(word)
            if sub is not None:
                cmd = sub
            elif cmd is not root:  # an argument of the command found; before it, values of global options
                break
        assert cmd is not root or not words, f"README shows an unknown command: {line.strip()}"


def test_quickstart_runs(tmp_path: Path) -> None:
    """examples/quickstart.py, as the README points to it: five methods on two sample personas, offline."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VPTT_DATA_DIR": str(tmp_path), "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "created=['p09_venice_glassblower', 'p17_outback_vet']" in out
    for method in ("baseline", "persona_only", "brag", "vprag", "comb"):
        assert out.count(f"{method:>12}: ") == 2
    assert "    baseline: A preferred outdoor spot\n" in out and out.count("entropy=") == 2
