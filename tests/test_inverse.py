"""Inverse mode through respx: photos captioned by a scripted vision model, the profile derived, the persona
upserted into an in-memory store; images referenced by path only, never stored; re-runs re-caption nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
import typer
from PIL import Image
from typer.testing import CliRunner

from vptt.agents.persona_gen import inverse as inv
from vptt.agents.persona_gen.inverse import (
    InverseConfig,
    build_persona_from_photos,
    ingest_photos,
    merge_elements,
)
from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig
from vptt.core.errors import ConfigError
from vptt.core.models import CANONICAL_CATEGORIES, Persona
from vptt.core.providers import RetryConfig
from vptt.stores.embedders import Embedder
from vptt.stores.memory import InMemoryPersonaStore

BASE = "http://testserver/v1"
COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


class TinyEmbedder(Embedder):
    """Hashing bag-of-words embedder (no model)."""

    name, dim = "tiny-hash", 32

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, 0] += 0.01
        return out


def _reply(content: str) -> httpx.Response:
    return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}]})


def _pixel_color(data_url: str) -> str:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    r, g, b = Image.open(io.BytesIO(raw)).convert("RGB").getpixel((4, 4))
    return max(("red", r), ("green", g), ("blue", b), key=lambda kv: kv[1])[0]


class FakeVision:
    """Captions photos by colour; ``bad_once`` colours first get malformed JSON, ``never`` ones always do."""

    def __init__(self, bad_once: set[str] = frozenset(), never: set[str] = frozenset()) -> None:
        self.bad_once, self.never = bad_once, never
        self.vision_calls: list[dict] = []
        self.profile_calls: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        user = body["messages"][1]["content"]
        if isinstance(user, str):  # the text-only profile call
            self.profile_calls.append(body)
            return _reply(json.dumps({"preferences": [f"prefers pref {i}" for i in range(12)],
                                      "interests": ["colour studies", "walks"],
                                      "summary": "Photographs colour."}))
        self.vision_calls.append(body)
        color = _pixel_color(user[1]["image_url"]["url"])
        retry = len(body["messages"]) > 2
        if color in self.never or (color in self.bad_once and not retry):
            return _reply('{"caption": "a ' + color + ' wall",')
        kind = "appreciation" if color == "green" else "activity"
        els = {c: [f"{color} {c}", f"shared {c}"] for c in CANONICAL_CATEGORIES[:5]}
        caption = (f"A photo of a {color} wall in soft light, with the person nearby holding a cup and "
                   f"looking at the {color} paint.")
        return _reply(json.dumps({"caption": caption, "type": kind, "elements": els}))


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for name, rgb in COLORS.items():
        Image.new("RGB", (64, 48), rgb).save(d / f"{name}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _chat() -> JSONChat:
    return JSONChat(LLMConfig(model="vision-test", base_url=BASE, api_key="sk-test", json_mode=False,
                              retry=RetryConfig(max_attempts=1)), http_client=httpx.Client())


def _run(fake: FakeVision, fn, *args, **kwargs):
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=fake)
        return fn(*args, **kwargs)


def test_ingest_photos_into_store(photos: Path) -> None:
    store = InMemoryPersonaStore(TinyEmbedder())
    fake = FakeVision(bad_once={"red"})
    res = _run(fake, ingest_photos, photos, "me", _chat(), store, demographics={"city": "Kyoto", "age": 41})
    assert res.upsert.status == "created" and len(res.captioned) == 3 and not res.failed
    stored = store.get("me")
    assert [Path(p.image).name for p in stored.posts] == ["blue.png", "green.png", "red.png"]
    assert all(Path(p.image).is_absolute() and Path(p.image).is_file() for p in stored.posts)
    assert stored.demographics.city == "Kyoto" and stored.demographics.age == 41
    assert stored.demographics.interests == ["colour studies", "walks"]
    assert stored.summary == "Photographs colour." and len(stored.preferences) == 12
    assert {p.type for p in stored.posts} == {"activity", "appreciation"}
    # malformed reply retried, reported with its raw text
    assert len(res.malformed) == 1 and res.malformed[0].recovered and "red wall" in res.malformed[0].raw
    # images are sent as data URLs but never stored: only the path and the derived text
    dumped = stored.model_dump_json()
    assert "data:image" not in dumped and "base64" not in dumped
    assert all(c["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
               for c in fake.vision_calls)
    digest = hashlib.sha256((photos / "blue.png").read_bytes()).hexdigest()
    assert stored.posts[0].model_extra["image_sha256"] == digest
    # persona-level vocabulary merged from the posts, most frequent first
    assert stored.elements["foreground"][0] == "shared foreground"
    assert len(store.embedded("me").captions) == 3


def test_rerun_reuses_captions_and_keeps_other_posts(photos: Path) -> None:
    store = InMemoryPersonaStore(TinyEmbedder())
    store.upsert(Persona.model_validate({"persona_id": "me", "demographics": {"occupation": "potter"},
                                         "posts": [{"post_id": "old", "caption": "An old post."}]}))
    _run(FakeVision(), ingest_photos, photos, "me", _chat(), store)
    fake = FakeVision()
    (photos / "red.png").rename(photos / "red_renamed.png")
    res = _run(fake, ingest_photos, photos, "me", _chat(), store)
    assert fake.vision_calls == [] and len(fake.profile_calls) == 1 and len(res.reused) == 3
    assert res.persona.extra["inverse"]["photos"] == 3
    red = next(p for p in store.get("me").posts if p.image and "red" in p.image)
    assert Path(red.image).name == red.model_extra["file_name"] == "red_renamed.png"
    stored = store.get("me")
    assert {p.post_id for p in stored.posts} >= {"old"} and len(stored.posts) == 4
    assert stored.demographics.occupation == "potter"
    res = _run(FakeVision(), ingest_photos, photos, "me", _chat(), store, replace=True)
    assert "old" not in {p.post_id for p in store.get("me").posts} and res.upsert.posts_removed == ["old"]


def test_failed_photo_is_reported_not_dropped_silently(photos: Path) -> None:
    fake = FakeVision(never={"blue"})
    res = _run(fake, build_persona_from_photos, photos, "me", _chat(), config=InverseConfig(workers=2))
    blue = str(photos / "blue.png")
    assert list(res.failed) == [blue] and "3 attempt" in res.failed[blue]
    assert len(res.persona.posts) == 2 and sum(not m.recovered for m in res.malformed) == 3


def test_bad_inputs(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        inv.list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        build_persona_from_photos(tmp_path / "empty", "me", _chat())
    with pytest.raises(ConfigError, match="persona_id"):
        build_persona_from_photos(photos, " me", _chat())


def test_image_is_downscaled(tmp_path: Path) -> None:
    Image.new("RGB", (3000, 1000), (1, 2, 3)).save(tmp_path / "big.png")
    raw = base64.b64decode(inv.image_data_url(tmp_path / "big.png", max_side=300).split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == (300, 100)


def test_merge_elements_by_frequency() -> None:
    posts = [Persona.model_validate({"persona_id": "x", "posts": [
        {"post_id": "a", "caption": "c", "elements": {"objects": ["Cup", "vase"], "mood": ["calm"]}},
        {"post_id": "b", "caption": "c", "elements": {"objects": ["vase", "cup"]}},
        {"post_id": "c", "caption": "c", "elements": {"objects": ["vase"]}}]})][0].posts
    assert merge_elements(posts) == {"objects": ["vase", "Cup"], "mood": ["calm"]}


def test_cli_ingest_photos(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vptt.sdk.cli import generate as _cli

    monkeypatch.setattr(_cli, "_chat", lambda *a, **k: _chat())
    store = InMemoryPersonaStore(TinyEmbedder())
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """root"""

    _cli.register_root(app, get_personalizer=lambda: type("PZ", (), {"store": store})())
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(side_effect=FakeVision())
        r = CliRunner().invoke(app, ["ingest-photos", str(photos), "--persona", "cli", "--city", "Oslo"])
    assert r.exit_code == 0, r.output
    assert "3 captioned" in r.output and "created" in r.output
    assert store.get("cli").demographics.city == "Oslo"
