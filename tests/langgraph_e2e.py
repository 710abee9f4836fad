"""End to end: ``langgraph dev`` serves ``vptt.agents.app:graph`` (named in the repository's langgraph.json)
and the LangGraph SDK client runs it: a conversation of three turns on one thread, configuration through
the run's ``context``, composer tokens through ``stream_mode="messages-tuple"`` and custom events.

Run by tests/test_langgraph_dev.py as ``python -m tests.langgraph_e2e OUTDIR`` inside a private network
namespace (loopback only) with telemetry off; writes ``summary.json`` into OUTDIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_persona
from tests.fake_openai import serve as fake_openai
from tests.procs import free_port, start_http, stop

ROOT = Path(__file__).resolve().parent.parent
QUERY = "A preferred outdoor spot"
OFFLINE_ENV = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false",
               "LANGSMITH_API_KEY": "", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}


def ingest(data_dir: Path) -> None:
    from vptt.agents.personalizer import Personalizer
    from vptt.core.settings import VPTTSettings

    p = Personalizer(settings=VPTTSettings(data_dir=data_dir))
    p.ingest([make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                                     "A bowl of ramen steaming on a counter under paper lanterns.",
                                     "Cherry blossoms over a stone path in a temple garden."])])


def start(out: Path, llm_key: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **OFFLINE_ENV, "VPTT_DATA_DIR": str(out / "data"), "VPTT_LLM_API_KEY": llm_key}
    exe = str(Path(sys.executable).parent / "langgraph")
    url = f"http://127.0.0.1:{port}"
    cmd = [exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
           "--config", str(ROOT / "langgraph.json")]
    return start_http(cmd, log=out / "langgraph.log", health_url=url + "/ok", what="langgraph dev", cwd=out,
                      env=env), url


def converse(url: str, llm_base: str) -> dict:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=url, api_key=None)
    seen: dict = {"graphs": [a["graph_id"] for a in client.assistants.search()]}
    context = {"composer": "llm", "llm_model": "fake-chat", "llm_base_url": llm_base, "text_gate_threshold": 0.0,
               "max_candidates": 1}
    thread = client.threads.create()
    tid = thread["thread_id"]
    first = client.runs.wait(tid, "vptt", input={"persona_id": "alice", "query": QUERY}, context=context)
    follow = client.runs.wait(tid, "vptt", input={"query": "now make it autumn"}, context=context)
    seen.update(first_prompt=first["prompt"], first_status=first["status"], follow_prompt=follow["prompt"],
                follow_previous=follow["previous"]["prompt"], follow_refines=follow["previous"]["run_id"],
                first_run_id=first["run_id"])
    tokens, custom, nodes = [], [], []
    for part in client.runs.stream(tid, "vptt", input={"messages": [{"role": "user", "content": "at night"}]},
                                   context=context, stream_mode=["messages-tuple", "custom", "updates"]):
        if part.event == "messages":
            chunk, meta = part.data
            if meta.get("langgraph_node") == "compose":
                tokens.append(chunk["content"])
        elif part.event == "custom":
            custom.append(part.data["event"])
        elif part.event == "updates":
            nodes += list(part.data)
    state = client.threads.get_state(tid)["values"]
    seen.update(tokens=tokens, custom=custom, nodes=nodes, turns=[t["query"] for t in state["turns"]],
                last_prompt=state["prompt"], messages=[m["type"] for m in state["messages"]],
                history=len(client.threads.get_history(tid, limit=100)))
    return seen


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ingest(out / "data")
    llm = fake_openai(delay=0.0)
    proc, url = start(out, "EMPTY")
    try:
        seen = converse(url, f"http://127.0.0.1:{llm.server_address[1]}/v1")
        seen["fake_openai"] = dict(llm.stats)
    finally:
        stop(proc)
        llm.shutdown()
    seen["project_untouched"] = not (ROOT / ".langgraph_api").exists()
    (out / "summary.json").write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
