"""The creator web page in a real headless Chromium against a real `vptt serve` on 127.0.0.1.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; or set ``VPTT_CHROMIUM``) and the Playwright
Python package (no browser download: Playwright drives the system Chromium through ``executable_path``). The
run happens in a child process (tests/serve_e2e.py), inside a private network namespace when the machine
allows it. The screenshot is kept under the test's tmp dir and copied to ``$VPTT_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.serve_e2e import CHROMIUM, N_POSTS, PERSONAS
from vptt.sdk._ray_backend import isolated_argv, isolation_available

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None or
                       importlib.util.find_spec("fastapi") is None,
                       reason="needs the serve extra and playwright: pip install 'vptt[serve,test]'"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install -y "
                                                           "chromium (or set VPTT_CHROMIUM)"),
]


def test_creator_page_in_chromium(tmp_path) -> None:
    argv = [sys.executable, "-m", "tests.serve_e2e", str(tmp_path)]
    isolated, _ = isolation_available()
    proc = subprocess.run(isolated_argv(argv) if isolated else argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=500)
    shot = tmp_path / "screenshot.png"
    if os.environ.get("VPTT_TEST_ARTIFACTS") and shot.exists():
        dest = Path(os.environ["VPTT_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "creator-page.png")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["upload"]["created"] == sorted(PERSONAS) and shot.stat().st_size > 10_000
    assert s["first_caption"].startswith("A quiet winter photo") and s["post_chips"] > 0
    lengths = [n for n in s["prompt_lengths"] if n]
    assert len(set(lengths)) > 5 and lengths == sorted(lengths)  # the prompt grew token by token
    assert "A preferred outdoor spot," in s["prompt"]
    assert s["weight_bars"] == min(14, N_POSTS) and 1 <= s["chosen_bars"] <= s["weight_bars"]
    assert s["quota_bars"] > 0 and s["elements"] > 0 and s["highlighted_posts"] == s["chosen_bars"]
    assert "n_eff" in s["trace_stats"] and s["candidates"] >= 1
    assert any(g.startswith("text gate: accept") for g in s["gates"]) and s["image_width"] == 64
    assert s["followup_prompt"].startswith(s["prompt"]) and "now make it autumn" in s["followup_prompt"]
    assert s["followup_prev"] == s["prompt"] and s["turns"] == ["A preferred outdoor spot", "now make it autumn"]
    assert s["methods"] == ["Baseline", "Persona only", "BRAG", "VPRAG", "Comb."]
    assert all(0 < float(x) < 1 for x in s["scores"]) and s["best"] >= 1 and s["error_hidden"]
    assert s["failed_requests"] == [] and len(s["hosts"]) == 1 and s["hosts"][0].startswith("127.0.0.1:")
