"""The graph a LangGraph server loads: ``langgraph.json`` names ``vptt.agents.app:graph`` (or the factory
:func:`make_graph`).

The graph is compiled without a checkpointer or store: the server (``langgraph dev``, LangGraph Platform)
brings its own, and threads become conversations. Runs take their configuration as plain data, in the run's
``context`` (or ``config["configurable"]``), as an :class:`~vptt.agents.context.AgentContext`; heavy objects
are built from it inside this process and cached per configuration. Input: ``{"persona_id": ..., "query":
...}`` (or a human message in ``messages``), optionally ``method``, ``seed``, ``refine``.

Example (``langgraph dev --no-browser``, then the LangGraph SDK)::

    from langgraph_sdk import get_sync_client
    client = get_sync_client(url="http://127.0.0.1:2024")
    thread = client.threads.create()
    first = client.runs.wait(thread["thread_id"], "vptt",
                             input={"persona_id": "p01_kyoto_ceramicist", "query": "A preferred outdoor spot"})
    again = client.runs.wait(thread["thread_id"], "vptt", input={"query": "now make it autumn"})
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph

from vptt.agents.graph import build_graph

GRAPH_NAME = "vptt"


def make_graph(config: Any = None) -> CompiledStateGraph:
    """Compile the agent graph for a server (no checkpointer: the server brings one).

    Args:
        config: the ``RunnableConfig`` a LangGraph server passes to graph factories; with
            ``configurable.reranker`` (a feedback model directory) the graph has the re-ranking node.
    """
    configurable = (config or {}).get("configurable", {}) if isinstance(config, dict) else {}
    return build_graph(rerank_node=bool(configurable.get("reranker"))).compile(name=GRAPH_NAME)


graph = make_graph()
"""The compiled graph (module level, as LangGraph's project template has it)."""
