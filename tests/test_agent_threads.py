"""Threads are conversations; the served graph takes plain configuration; streams carry composer tokens
(LangGraph ``messages`` mode) and custom events; any checkpointer can be injected; images never collide."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from tests.conftest import HashEmbedderBase, make_persona
from tests.test_graph import BASE, KEY, FakeGenerator, Scorer, sse_chat
from vptt.agents.app import graph as served_graph
from vptt.agents.app import make_graph
from vptt.agents.context import AgentContext, RunContext, clear_cache, components_for
from vptt.agents.conversation import mark_repeated, refined_query, retrieval_query
from vptt.agents.graph import build_graph
from vptt.agents.llm_composer import LLMComposer
from vptt.agents.personalizer import Personalizer
from vptt.core.errors import ConfigError
from vptt.core.providers import RetryConfig
from vptt.sdk.agent import PersonalizationAgent
from vptt.stores.memory import InMemoryPersonaStore

QUERY = "a quiet lake at dawn"


@pytest.fixture
def personalizer() -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(HashEmbedderBase()))
    p.store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                                          "A bowl of ramen steaming on a counter under paper lanterns.",
                                          "Cherry blossoms over a stone path in a temple garden."],
                                elements=None))
    p.store.upsert(make_persona("bob", ["Surfers riding a wave at sunset on a sandy beach."]))
    return p


def test_a_thread_is_a_conversation(personalizer: Personalizer) -> None:
    agent = PersonalizationAgent(personalizer, text_scorer=None, checkpoint=":memory:")
    first = agent.run("alice", QUERY, thread_id="chat")
    follow = agent.run("alice", "now make it autumn", thread_id="chat")
    assert follow.refines == first.run_id and follow.previous_prompt == first.prompt
    assert follow.prompt.startswith(f"{first.prompt}, now make it autumn")
    new = follow.prompt[len(f"{first.prompt}, now make it autumn"):].strip(", ").split(", ")
    assert not set(new) & set(first.prompt.split(", "))  # elements already there are not repeated
    assert any(e.status == "duplicate" for e in follow.trace.elements)
    assert follow.query == "now make it autumn" and follow.trace.notes[0].startswith("follow-up: retrieval")
    turns = agent.history("chat")
    assert [t.query for t in turns] == [QUERY, "now make it autumn"] and turns[1].refines == first.run_id
    assert turns[1].retrieval_query == retrieval_query("now make it autumn", turns[0].model_dump())
    state = agent.thread_state("chat")
    assert [type(m).__name__ for m in state["messages"]] == ["HumanMessage", "AIMessage"] * 2
    assert state["messages"][-1].content == follow.prompt and state["turns"][0]["trace"]["k"] == first.trace.k
    fresh = agent.run("alice", QUERY, thread_id="chat", refine=False)  # same thread, no refinement
    assert fresh.refines is None and fresh.prompt == first.prompt
    other = agent.run("bob", "now make it autumn", thread_id="chat")  # another persona starts afresh
    assert other.refines is None and other.prompt == personalizer.personalize("bob", "now make it autumn").prompt
    assert len({first.run_id, follow.run_id, fresh.run_id, other.run_id}) == 4
    bare = personalizer.personalize("alice", QUERY)
    assert first.prompt == bare.prompt  # a first turn is the plain run


def test_conversation_helpers() -> None:
    prev = {"query": "a lake", "retrieval_query": "a lake", "prompt": "Summary here. a lake, mist"}
    assert retrieval_query("now autumn", prev) == "now autumn. a lake"
    assert retrieval_query("x", None) == "x"
    assert refined_query(prev["prompt"], "now autumn", "Summary here.") == "a lake, mist, now autumn"
    from vptt.agents.trace import ElementChoice, RetrievalTrace

    t = RetrievalTrace(method="vprag", elements=[ElementChoice(text=w, category="c", post_id="p", score=0.1)
                                                 for w in ("tea", "mist", "lake shore")])
    out = mark_repeated(t, "steaming tea by the misty lake")  # whole words only: "mist" is not in "misty"
    assert [e.status for e in out.elements] == ["duplicate", "kept", "kept"] and t.elements[0].status == "kept"


def test_llm_follow_up_gets_the_conversation(personalizer: Personalizer) -> None:
    llm = LLMComposer(model="m", base_url=BASE, api_key=KEY, http_client=httpx.Client(),
                      retry=RetryConfig(max_attempts=1))
    agent = PersonalizationAgent(personalizer, composer=llm, text_scorer=None, checkpoint=":memory:")
    replies = iter(["misty lake at dawn with a wooden boat", "autumn maples over the misty lake"])

    def chat(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                             "role": "assistant", "content": next(replies)}}]})
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=chat)
        agent.run("alice", QUERY, thread_id="t")
        follow = agent.run("alice", "now make it autumn", thread_id="t")
    assert follow.prompt == "autumn maples over the misty lake" and follow.refines
    first_msgs = json.loads(route.calls[0].request.content)["messages"]
    msgs = json.loads(route.calls[1].request.content)["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1] == first_msgs[1]  # the earlier turn, as it was sent
    assert msgs[2]["content"] == "misty lake at dawn with a wooden boat"
    assert 'Refine your previous prompt following this request: "now make it autumn"' in msgs[3]["content"]
    assert "<persona_memory>" in msgs[3]["content"] and not json.loads(route.calls[1].request.content).get("stream")


def test_messages_mode_streams_composer_tokens(personalizer: Personalizer) -> None:
    llm = LLMComposer(model="m", base_url=BASE, api_key=KEY, http_client=httpx.Client(),
                      retry=RetryConfig(max_attempts=1))
    agent = PersonalizationAgent(personalizer, composer=llm, text_scorer=None)
    ctx = RunContext(agent.components, "alice", "alice", stream_tokens=True)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=lambda r: sse_chat("misty lake, wooden boat"))
        chunks = list(make_graph().stream({"persona_id": "alice", "query": QUERY}, context=ctx,
                                          stream_mode=["messages", "custom"]))
    tokens = [(c.content, meta["langgraph_node"]) for mode, (c, meta) in
              ((m, ch) for m, ch in chunks if m == "messages") if isinstance(c, AIMessageChunk)]
    assert tokens == [("misty", "compose"), (" lake,", "compose"), (" wooden", "compose"), (" boat", "compose")]
    final = [c for mode, (c, meta) in ((m, ch) for m, ch in chunks if m == "messages")
             if meta["langgraph_node"] == "result"]
    assert [m.content for m in final] == ["misty lake, wooden boat"]  # the turn's reply
    custom = [ch["event"] for m, ch in chunks if m == "custom"]
    assert custom[0] == "retrieval" and custom.count("token") == 4 and custom[-2:] == ["candidate", "gate"]


def test_injected_checkpointer_and_async_conversation(personalizer: Personalizer) -> None:
    class Counting(InMemorySaver):
        puts = 0

        def put(self, *a, **k):
            Counting.puts += 1
            return super().put(*a, **k)

    saver = Counting()
    agent = PersonalizationAgent(personalizer, text_scorer=None, checkpointer=saver)
    agent.run("alice", QUERY, thread_id="x")
    assert Counting.puts > 0 and saver.get_tuple({"configurable": {"thread_id": "x"}}) is not None
    import asyncio

    async def go():
        return await agent.arun("alice", "now make it autumn", thread_id="x")
    follow = asyncio.run(go())
    assert follow.refines and [t.query for t in agent.history("x")] == [QUERY, "now make it autumn"]
    with pytest.raises(ConfigError, match="no checkpoints"):
        PersonalizationAgent(personalizer).history("x")


def test_images_of_two_threads_never_collide(personalizer: Personalizer, tmp_path: Path) -> None:
    """Issue 12: thread ids that share their first 16 characters wrote one PNG for both threads."""
    gen = FakeGenerator()
    agent = PersonalizationAgent(personalizer, text_scorer=Scorer(lambda p: 1.0), generator=gen,
                                 checkpoint=":memory:", save_dir=tmp_path)
    a = agent.run("alice", QUERY, thread_id="conversation-0001-alice", seed=10)
    b = agent.run("bob", QUERY, thread_id="conversation-0001-bob", seed=20)
    a2 = agent.run("alice", "now at night", thread_id="conversation-0001-alice", seed=30)
    paths = [r.images[0].path for r in (a, b, a2)]
    assert len(set(paths)) == 3 and all(Path(p).is_file() for p in paths)
    for res, seed in ((a, 10), (b, 20), (a2, 30)):
        assert np.asarray(Image.open(res.images[0].path))[0, 0, 0] == seed  # each result shows its own image
    assert len(a.run_id) == 32 and a.run_id != a2.run_id


def test_served_graph_builds_components_from_plain_context(tmp_path: Path) -> None:
    """`langgraph.json` names vptt.agents.app:graph; a run's context is plain data, no live objects."""
    clear_cache()
    try:
        ctx = AgentContext(data_dir=str(tmp_path), store="memory", text_gate_threshold=0.0, max_candidates=1)
        comps = components_for(ctx)
        assert components_for(AgentContext(**ctx.__dict__)) is comps  # cached per configuration
        comps.personalizer.store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn."]))
        assert served_graph.name == "vptt" and served_graph.checkpointer is None  # the server brings its own
        graph = build_graph().compile(checkpointer=InMemorySaver())
        cfg = {"configurable": {"thread_id": "s1"}}
        context = {"data_dir": str(tmp_path), "store": "memory", "text_gate_threshold": 0.0, "max_candidates": 1}
        out = graph.invoke({"persona_id": "alice", "query": QUERY}, cfg, context=context)
        assert out["status"] == "deferred" and QUERY in out["prompt"]
        assert out["candidates"][0]["score"] is not None  # the text gate scored with the configured scorer
        json.dumps({k: v for k, v in out.items() if k != "messages"})  # the state is plain data
        chat = graph.invoke({"messages": [HumanMessage(content="now make it autumn")]}, cfg, context=context)
        assert chat["prompt"].startswith(out["prompt"] + ", now make it autumn") and len(chat["turns"]) == 2
        by_config = make_graph().invoke({"query": QUERY}, {"configurable": {**context, "persona_id": "alice"}})
        assert by_config["prompt"] == out["prompt"]  # configuration through config["configurable"]
        with pytest.raises(ConfigError, match="no persona"):
            make_graph().invoke({"query": QUERY}, context=context)
        with pytest.raises(ConfigError, match="composer"):
            AgentContext(composer="gpt")
    finally:
        clear_cache()
