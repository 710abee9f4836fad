"""`langgraph dev` serves the graph named in langgraph.json; the LangGraph SDK client holds a conversation.

The server runs in a child process inside a private network namespace (``unshare -n``, loopback only) when
the machine allows it, always with LangGraph telemetry and LangSmith tracing off (see tests/langgraph_e2e.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.langgraph_e2e import OFFLINE_ENV
from vptt.sdk._ray_backend import isolated_argv, isolation_available

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("langgraph_api") is None or importlib.util.find_spec("langgraph_sdk") is None,
    reason="needs the langgraph extra: pip install 'vptt[langgraph]'")


def test_langgraph_dev_serves_a_conversation(tmp_path) -> None:
    assert json.loads((ROOT / "langgraph.json").read_text())["graphs"] == {"vptt": "vptt.agents.app:graph"}
    argv = [sys.executable, "-m", "tests.langgraph_e2e", str(tmp_path)]
    isolated, _ = isolation_available()
    proc = subprocess.run(isolated_argv(argv) if isolated else argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=400, env={**os.environ, **OFFLINE_ENV})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["graphs"] == ["vptt"] and s["first_status"] == "deferred"
    assert "A preferred outdoor spot" in s["first_prompt"]
    assert s["follow_previous"] == s["first_prompt"] and s["follow_refines"] == s["first_run_id"]
    assert s["follow_prompt"].startswith(s["first_prompt"] + ", now make it autumn")
    assert s["turns"] == ["A preferred outdoor spot", "now make it autumn", "at night"]  # one thread, 3 runs
    assert s["messages"] == ["human", "ai"] * 3
    assert "".join(s["tokens"]) == s["last_prompt"] and len(s["tokens"]) > 5  # composer tokens, streamed
    assert s["custom"][0] == "retrieval" and "token" in s["custom"] and s["custom"][-2:] == ["candidate", "gate"]
    assert s["nodes"] == ["load_persona", "retrieve", "compose", "text_gate", "result"]
    assert s["fake_openai"] == {"/v1/chat/completions": 3} and s["project_untouched"]
