"""`vptt serve` in process (FastAPI's TestClient): personas, personalize (JSON and SSE), compare, score,
photos (inverse mode), tokens limited to personas, request limits, errors with the SDK's messages."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import HashEmbedderBase, make_persona
from tests.test_graph import FakeGenerator, sse_chat
from tests.test_inverse import FakeVision
from vptt.agents.gates import VPTTTextScorer
from vptt.agents.llm_composer import LLMComposer
from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig
from vptt.agents.personalizer import Personalizer
from vptt.core.errors import ConfigError, PersonaValidationError
from vptt.core.personas import load_personas
from vptt.core.providers import RetryConfig
from vptt.sdk.agent import PersonalizationAgent
from vptt.sdk.server import ServeConfig, Service, TokenGrant, create_app, load_tokens
from vptt.sdk.server.config import is_loopback
from vptt.stores.memory import InMemoryPersonaStore

ALL, ALICE = "a" * 24, "b" * 24
BASE = "http://testserver/v1"
AUTH = {"all": {"Authorization": f"Bearer {ALL}"}, "alice": {"Authorization": f"Bearer {ALICE}"}}


def _jsonl(*personas) -> str:
    return "\n".join(json.dumps(p.model_dump(mode="json")) for p in personas) + "\n"


def _personas():
    return [make_persona("alice", ["A wooden boat on a misty lake at dawn with pine trees.",
                                   "A bowl of ramen steaming on a counter under paper lanterns.",
                                   "Cherry blossoms over a stone path in a temple garden."]),
            make_persona("bob", ["Surfers riding a wave at sunset on a sandy beach.",
                                 "A neon-lit street food stall at night with skewers grilling."])]


def _client(tmp_path: Path, *, tokens=(), agent_kw=None, vision=None, **config) -> TestClient:
    p = Personalizer(InMemoryPersonaStore(HashEmbedderBase()))
    kw = {"text_scorer": None, **(agent_kw or {})}  # no text gate unless a test asks for one
    agent = PersonalizationAgent(p, checkpoint=":memory:", auto_thread=False, persona_subdirs=True,
                                 save_dir=tmp_path / "images", **kw)
    cfg = ServeConfig(tokens=tuple(tokens), **config)
    return TestClient(create_app(cfg, service=Service(cfg, agent=agent, vision_chat=vision)))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    c = _client(tmp_path)
    assert c.post("/api/personas", content=_jsonl(*_personas())).status_code == 200
    return c


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for frame in text.strip().split("\n\n"):
        kind = re.search(r"^event: (.+)$", frame, re.M).group(1)
        out.append((kind, json.loads(re.search(r"^data: (.+)$", frame, re.M).group(1))))
    return out


def test_personas_upload_list_show_posts_delete(client: TestClient) -> None:
    assert [p["persona_id"] for p in client.get("/api/personas").json()] == ["alice", "bob"]
    shown = client.get("/api/personas/alice").json()
    assert shown["persona_id"] == "alice" and len(shown["posts"]) == 3
    r = client.post("/api/personas/alice/posts", json={"post_id": "new", "caption": "A red kite over hills.",
                                                        "elements": {"objects": ["red kite"]}})
    assert r.status_code == 200 and r.json()["posts_added"] == ["new"] and r.json()["texts_embedded"] > 0
    assert [p["post_id"] for p in client.get("/api/personas/alice").json()["posts"]][-1] == "new"
    r = client.delete("/api/personas/alice/posts/new")
    assert r.json()["posts_removed"] == ["new"]
    r = client.delete("/api/personas/alice/posts/new")  # gone: the SDK's KeyError message, 404
    assert r.status_code == 404 and r.json()["detail"] == "persona 'alice' has no post 'new'"
    r = client.post("/api/personas", content=_jsonl(*_personas()))  # idempotent
    assert r.json()["unchanged"] == ["alice", "bob"] and r.json()["texts_embedded"] == 0
    assert client.delete("/api/personas/bob").json() == {"deleted": "bob"}
    r = client.get("/api/personas/bob")
    assert r.status_code == 404 and r.json()["error"] == "PersonaNotFoundError"
    assert r.json()["detail"].startswith("persona 'bob' not found in in-memory store")  # names the store
    assert client.delete("/api/personas/bob").status_code == 404
    r = client.post("/api/personas/alice/posts", json={"post_id": "x", "caption": ""})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "post.caption"


def test_failed_upload_writes_nothing_and_names_line_and_field(client: TestClient, tmp_path: Path) -> None:
    good = make_persona("carol", ["A red kite over green hills."])
    bad = '{"persona_id": "dave", "posts": [{"post_id": "1", "caption": ""}]}'
    body = _jsonl(good) + bad + "\n"
    r = client.post("/api/personas", params={"name": "batch.jsonl"}, content=body)
    (tmp_path / "batch.jsonl").write_text(body)
    with pytest.raises(PersonaValidationError) as sdk:  # the same file through the SDK
        load_personas(tmp_path / "batch.jsonl")
    assert r.status_code == 422 and r.json()["error"] == "PersonaValidationError"
    assert r.json()["detail"] == str(sdk.value).replace(str(tmp_path / "batch.jsonl"), "batch.jsonl")
    assert r.json()["problems"] == [{"file": "batch.jsonl", "line": 2, "field": "posts[0].caption",
                                     "message": sdk.value.problems[0].message}]
    assert "carol" not in [p["persona_id"] for p in client.get("/api/personas").json()]  # nothing written
    r = client.post("/api/personas", content=b"\xff\xfe{}")
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]


def test_request_size_limits(tmp_path: Path) -> None:
    c = _client(tmp_path, max_body_bytes=2048, max_upload_bytes=4096)
    r = c.post("/api/score", json={"persona_id": "a", "prompt": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge"
    big = _jsonl(make_persona("p", ["A caption that is long enough. " * 30, "Another caption, long. " * 150]))
    assert len(big) > 4096
    assert c.post("/api/personas", content=big).status_code == 413
    assert c.get("/api/personas").json() == []  # nothing half-written
    assert c.post("/api/personas", content=_jsonl(make_persona("p", ["short"]))).status_code == 200  # < 4 KB


def test_personalize_json_stream_threads_and_errors(client: TestClient) -> None:
    r = client.post("/api/personalize", json={"persona_id": "alice", "query": "a quiet lake", "thread_id": "c1"})
    first = r.json()
    assert r.status_code == 200 and first["status"] == "deferred" and first["thread_id"] == "c1"
    assert "a quiet lake" in first["prompt"] and first["trace"]["k"] >= 1
    r = client.post("/api/personalize", json={"persona_id": "alice", "query": "now make it autumn",
                                              "thread_id": "c1"})
    assert r.json()["refines"] == first["run_id"] and r.json()["prompt"].startswith(first["prompt"])
    assert [t["query"] for t in client.get("/api/threads/c1").json()] == ["a quiet lake", "now make it autumn"]
    r = client.post("/api/personalize/stream", json={"persona_id": "alice", "query": "ramen"})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "node" and kinds[-1] == "result" and {"retrieval", "candidate", "gate"} <= set(kinds)
    retrieval = next(d for k, d in events if k == "retrieval")["trace"]
    assert retrieval["weights"] and abs(sum(retrieval["weights"]) - 1) < 1e-6
    assert "ramen" in events[-1][1]["prompt"]
    for body, status, error in [({"persona_id": "zed", "query": "x"}, 404, "PersonaNotFoundError"),
                                ({"persona_id": "alice", "query": "x", "method": "vpraq"}, 400, "ConfigError"),
                                ({"persona_id": "alice", "query": "   "}, 400, "EmptyQueryError")]:
        for path in ("/api/personalize", "/api/personalize/stream"):
            r = client.post(path, json=body)
            assert (r.status_code, r.json()["error"]) == (status, error), (path, body, r.text)
    assert "did you mean 'vprag'" in client.post("/api/personalize", json={
        "persona_id": "alice", "query": "x", "method": "vpraq"}).json()["detail"]


def test_llm_tokens_gates_and_images_over_sse(tmp_path: Path) -> None:
    llm = LLMComposer(model="m", base_url=BASE, api_key="sk-test", http_client=httpx.Client(),
                      retry=RetryConfig(max_attempts=1))
    c = _client(tmp_path, agent_kw={"composer": llm, "generator": FakeGenerator(), "seed": 5})
    c.post("/api/personas", content=_jsonl(*_personas()))
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.post("/chat/completions").mock(side_effect=lambda req: sse_chat("misty lake at dawn, pines"))
        r = c.post("/api/personalize/stream", json={"persona_id": "alice", "query": "a lake", "seed": 5})
    events = _events(r.text)
    tokens = "".join(d["text"] for k, d in events if k == "token")
    assert tokens == "misty lake at dawn, pines" and events[-1][1]["prompt"] == tokens
    image = next(d for k, d in events if k == "image")["image"]
    assert image["url"] == f"/api/personas/alice/images/{image['path']}" and "/" not in image["path"]
    assert [d["decision"]["gate"] for k, d in events if k == "gate"] == ["text", "image"]
    png = c.get(image["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).getpixel((0, 0)) == (5, 0, 0)  # FakeGenerator: seed 5
    assert events[-1][1]["images"][0]["url"] == image["url"]  # no server path leaves the server
    assert str(tmp_path) not in r.text
    assert c.get("/api/personas/alice/images/..%2F..%2Fsecret.png").status_code in (400, 404)
    assert c.get("/api/personas/alice/images/" + "0" * 32 + "-0.png").status_code == 404


def test_compare_and_score(client: TestClient) -> None:
    rows = client.post("/api/compare", json={"persona_id": "alice", "query": "a quiet lake"}).json()
    assert [r["method"] for r in rows] == ["baseline", "persona_only", "brag", "vprag", "comb"]
    assert rows[0]["prompt"] == "a quiet lake"  # baseline: p' = p
    for r in rows:
        s = r["score"]
        nv = s["nv"] if r["caption_conditioned"] else 0.0
        assert s["score"] == pytest.approx(0.2 * s["pa"] + 0.3 * s["gs"] + 0.3 * s["cp"] + 0.2 * nv, abs=1e-6)
        assert r["caption_conditioned"] == (r["method"] in ("brag", "vprag", "comb"))
    vprag = rows[3]
    scored = client.post("/api/score", json={"persona_id": "alice", "prompt": vprag["prompt"]}).json()
    p = Personalizer(InMemoryPersonaStore(HashEmbedderBase()))
    p.store.upsert(_personas()[0])
    ref_score, terms = VPTTTextScorer(p.embedder).explain(p.embedded("alice"), vprag["prompt"])
    assert scored["score"] == pytest.approx(ref_score, abs=1e-5) == pytest.approx(vprag["score"]["score"])
    assert (scored["pa"], scored["gs"], scored["cp"], scored["nv"]) == pytest.approx(
        (terms["pa"], terms["gs"], terms["cp"], terms["nv"]), abs=1e-5)
    r = client.post("/api/score", json={"persona_id": "alice", "prompt": "x", "extra": 1})
    assert r.status_code == 422


def test_photos_through_the_inverse_mode(tmp_path: Path) -> None:
    chat = JSONChat(LLMConfig(model="vision-test", base_url="http://testserver/v1", api_key="sk-test",
                              json_mode=False, retry=RetryConfig(max_attempts=1)), http_client=httpx.Client())
    c = _client(tmp_path, vision=chat)
    files = []
    for name, rgb in (("red.png", (200, 30, 30)), ("green.png", (30, 200, 30))):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), rgb).save(buf, format="PNG")
        files.append(("files", (name, buf.getvalue(), "image/png")))
    fake = FakeVision()
    with respx.mock(base_url="http://testserver/v1") as mock:
        mock.post("/chat/completions").mock(side_effect=fake)
        r = c.post("/api/personas/eve/photos", files=files, data={"city": "Lisbon"})
        again = c.post("/api/personas/eve/photos", files=files[:1])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "created" and len(r.json()["captioned"]) == 2 and r.json()["posts"] == 2
    assert again.json()["reused"] == r.json()["captioned"][:1] and len(fake.vision_calls) == 2  # not recaptioned
    persona = c.get("/api/personas/eve").json()
    assert persona["demographics"]["city"] == "Lisbon" and persona["summary"] == "Photographs colour."
    assert {p["file_name"] for p in persona["posts"]} == {"red.png", "green.png"}
    assert all(p["image"] is None for p in persona["posts"])  # the uploaded bytes are not kept
    r = c.post("/api/personas/eve/photos", files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert r.status_code == 400 and "not an image" in r.json()["detail"]


def test_tokens_limit_every_route_to_their_personas(tmp_path: Path) -> None:
    c = _client(tmp_path, tokens=[TokenGrant(token=ALL, name="admin"),
                                  TokenGrant(token=ALICE, personas=frozenset({"alice"}))],
                agent_kw={"generator": FakeGenerator()})
    assert c.get("/api/personas").status_code == 401
    assert c.get("/api/personas", headers={"Authorization": "Bearer " + "z" * 24}).status_code == 401
    assert c.get("/api/health").status_code == 200 and c.get("/").status_code == 200  # public, no data
    bob_only = _jsonl(_personas()[1])
    r = c.post("/api/personas", content=_jsonl(*_personas()), headers=AUTH["alice"])
    assert r.status_code == 403 and "bob" in r.json()["detail"]
    assert c.get("/api/personas", headers=AUTH["all"]).json() == []  # nothing written
    c.post("/api/personas", content=_jsonl(*_personas()), headers=AUTH["all"])
    bob = c.post("/api/personalize", json={"persona_id": "bob", "query": "surf"}, headers=AUTH["all"]).json()
    bob_image = bob["images"][0]["url"]
    assert [p["persona_id"] for p in c.get("/api/personas", headers=AUTH["alice"]).json()] == ["alice"]
    h = AUTH["alice"]
    denied = [c.get("/api/personas/bob", headers=h), c.delete("/api/personas/bob", headers=h),
              c.post("/api/personas/bob/posts", json={"post_id": "x", "caption": "y"}, headers=h),
              c.delete("/api/personas/bob/posts/bob-00", headers=h),
              c.post("/api/personas/bob/photos", files=[("files", ("a.png", b"x", "image/png"))], headers=h),
              c.get(bob_image, headers=h),
              c.post("/api/personas", content=bob_only, headers=h),
              c.post("/api/personalize", json={"persona_id": "bob", "query": "x"}, headers=h),
              c.post("/api/personalize/stream", json={"persona_id": "bob", "query": "x"}, headers=h),
              c.post("/api/compare", json={"persona_id": "bob", "query": "x"}, headers=h),
              c.post("/api/score", json={"persona_id": "bob", "prompt": "x"}, headers=h)]
    assert [r.status_code for r in denied] == [403] * len(denied)
    operations = {(m.upper(), path) for path, ops in c.get("/openapi.json").json()["paths"].items() for m in ops}
    covered = {("GET", "/api/personas/{persona_id}"), ("DELETE", "/api/personas/{persona_id}"),
               ("POST", "/api/personas/{persona_id}/posts"), ("DELETE", "/api/personas/{persona_id}/posts/{post_id}"),
               ("POST", "/api/personas/{persona_id}/photos"), ("GET", "/api/personas/{persona_id}/images/{name}"),
               ("POST", "/api/personas"), ("POST", "/api/personalize"), ("POST", "/api/personalize/stream"),
               ("POST", "/api/compare"), ("POST", "/api/score")}
    # every route is denied above, filters the list, is scoped per token (threads) or holds no persona data
    assert operations == covered | {("GET", "/api/personas"), ("GET", "/api/threads/{thread_id}"),
                                    ("GET", "/api/health")}
    after = c.get("/api/personas/bob", headers=AUTH["all"]).json()
    assert len(after["posts"]) == 2  # unchanged
    # threads are per token: the same thread id names two conversations
    c.post("/api/personalize", json={"persona_id": "alice", "query": "a lake", "thread_id": "t"}, headers=h)
    r = c.post("/api/personalize", json={"persona_id": "alice", "query": "ramen", "thread_id": "t"},
               headers=AUTH["all"])
    assert r.json()["refines"] is None
    assert [t["query"] for t in c.get("/api/threads/t", headers=h).json()] == ["a lake"]


def test_binding_and_token_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="token"):
        ServeConfig(host="0.0.0.0").check_binding()
    ServeConfig(host="0.0.0.0", tokens=(TokenGrant(token=ALL),)).check_binding()
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0", "10.0.0.2")] == [
        True, True, True, True, False, False]
    f = tmp_path / "tokens.json"
    f.write_text(json.dumps([{"token": ALL, "personas": None}, {"token": ALICE, "personas": ["alice"]}]))
    monkeypatch.setenv("VPTT_SERVE_TOKEN", "e" * 20)
    grants = load_tokens(f)
    assert [g.personas for g in grants] == [None, frozenset({"alice"}), None] and ALL not in repr(grants)
    f.write_text('[{"token": "short"}]')
    with pytest.raises(ConfigError, match="16 characters"):
        load_tokens(f)
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="token file"):
        load_tokens(f)


def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"/api/personas", "/api/personas/{persona_id}", "/api/personas/{persona_id}/posts",
            "/api/personas/{persona_id}/photos", "/api/personas/{persona_id}/images/{name}", "/api/personalize",
            "/api/personalize/stream", "/api/compare", "/api/score", "/api/threads/{thread_id}"} <= set(doc["paths"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "text/event-stream" in doc["paths"]["/api/personalize/stream"]["post"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 200
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    html = client.get("/").text
    assert not re.search(r"(src|href)=\"https?://", html)  # nothing from a CDN
    assert client.get("/api/health").json()["status"] == "ok"
