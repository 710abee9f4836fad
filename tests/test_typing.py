"""The public API type-checks: mypy runs on a typed usage file (tests/typing/public_api.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = {"core": "core", "stores": "stores", "evaluators": "evaluators", "agents": "agents", "sdk": "sdk",
          "data": "examples/data"}


def _package_view(where: Path) -> Path:
    """The installed layout (`vptt/core`, `vptt/stores`, ...) as symlinks, for mypy, which does not run
    setuptools' editable import hook."""
    pkg = where / "vptt"
    pkg.mkdir(parents=True)
    for item in ("__init__.py", "py.typed"):
        (pkg / item).symlink_to(ROOT / "vptt" / item)
    for sub, folder in LAYOUT.items():
        (pkg / sub).symlink_to(ROOT / folder, target_is_directory=True)
    return where


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None,
                    reason="mypy is installed by the test extra")
def test_public_api_type_checks(tmp_path: Path) -> None:
    view = _package_view(tmp_path / "view")
    cmd = [sys.executable, "-m", "mypy", "--no-error-summary", "--follow-imports=silent", "--python-version",
           "3.10", "--cache-dir", str(ROOT / ".mypy_cache"), "--disallow-untyped-defs",
           "--ignore-missing-imports", str(ROOT / "tests" / "typing" / "public_api.py")]
    proc = subprocess.run(cmd, cwd=view, capture_output=True, text=True, timeout=600,
                          env={"MYPYPATH": str(view), "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
