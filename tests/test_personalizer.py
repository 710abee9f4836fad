"""personalize() and the Personalizer: all methods, ad-hoc personas, errors, settings."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_persona
from vptt import (
    ConfigError,
    EmptyQueryError,
    NoPostsError,
    Persona,
    Personalizer,
    PersonaNotFoundError,
    VPTTSettings,
    personalize,
)
from vptt.agents.methods import METHODS
from vptt.stores.memory import InMemoryPersonaStore


@pytest.fixture
def pz(embedder, two_personas) -> Personalizer:
    p = Personalizer(InMemoryPersonaStore(embedder))
    p.ingest(two_personas)
    return p


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_a_typed_result(pz: Personalizer, method: str) -> None:
    r = pz.personalize("alice", "A preferred outdoor spot", method=method)
    assert r.method == method and r.persona_id == "alice" and "A preferred outdoor spot" in r.prompt
    assert r.trace.method == method and r.trace.composition is not None
    assert set(r.timings_ms) == {"embed_query", "load_persona", "retrieve", "compose", "total"}
    json.loads(r.model_dump_json())
    if method == "baseline":
        assert r.prompt == "A preferred outdoor spot"
    if method in ("vprag", "comb"):
        assert r.trace.k >= 1 and abs(sum(r.trace.weights) - 1) < 1e-9 and r.trace.kept_elements()
        assert all(e in r.prompt for e in r.trace.kept_elements())
    if method in ("vprag", "comb"):  # the summary S_p leads (paper's f_compose(p, S_p, E_p, L))
        assert r.prompt.startswith(pz.store.get("alice").summary.strip())
    else:
        assert r.prompt.startswith("A preferred outdoor spot")
    if method in ("brag", "comb"):  # all captions, most similar first; the template appends the best
        assert r.trace.captions_used[0] in r.prompt and len(r.trace.captions_used) == len(pz.store.get("alice").posts)


def test_vprag_prefers_relevant_posts(pz: Personalizer) -> None:
    r = pz.personalize("alice", "a steaming bowl of noodles in a restaurant")
    assert r.trace.chosen_posts[0].post_id == "alice-01"


def test_adhoc_persona_is_embedded_once(embedder) -> None:
    pz = Personalizer(InMemoryPersonaStore(embedder))
    persona = make_persona("adhoc", ["A misty mountain trail with a wooden signpost."])
    first = pz.personalize(persona, "a hike")
    assert pz.embedded(persona) is pz.embedded(persona)
    assert pz.personalize(persona, "a hike").prompt == first.prompt
    assert "adhoc" not in pz.store  # ad-hoc personas are not written to the store


def test_errors(pz: Personalizer) -> None:
    with pytest.raises(PersonaNotFoundError):
        pz.personalize("nobody", "x")
    with pytest.raises(EmptyQueryError):
        pz.personalize("alice", "   ")
    with pytest.raises(ConfigError, match="did you mean 'vprag'"):
        pz.personalize("alice", "x", method="vprg")


def test_no_posts_falls_back_and_says_so(pz: Personalizer) -> None:
    empty = Persona(persona_id="empty", summary="Nobody yet.")
    r = pz.personalize(empty, "a beach", method="vprag")
    assert r.method == "persona_only" and "no posts" in r.fallback
    with pytest.raises(NoPostsError):
        pz.personalize(empty, "a beach", strict=True)


def test_settings_from_environment(monkeypatch, tmp_path, embedder, two_personas) -> None:
    monkeypatch.setenv("VPTT_STORE", "memory")
    monkeypatch.setenv("VPTT_TAU", "0.5")
    monkeypatch.setenv("VPTT_DATA_DIR", str(tmp_path))
    s = VPTTSettings()
    assert s.store == "memory" and s.tau == 0.5 and s.cache_path == tmp_path / "embeddings.sqlite"
    pz = Personalizer(embedder=embedder, settings=s)
    assert isinstance(pz.store, InMemoryPersonaStore) and pz.config.tau == 0.5
    pz.ingest(two_personas)
    assert personalize("bob", "sunset surf", personalizer=pz).trace.tau == 0.5
    with pytest.raises(ValueError):
        VPTTSettings(store="mongo")


def test_personalize_runs_the_graph_and_matches_the_bare_path(pz: Personalizer) -> None:
    from vptt import PersonalizationResult

    r = personalize("alice", "A preferred outdoor spot", personalizer=pz)
    assert isinstance(r, PersonalizationResult) and r.status == "deferred"  # no generator: stops after the text gate
    assert r.prompt == pz.personalize("alice", "A preferred outdoor spot").prompt
    assert personalize("alice", "x", personalizer=pz, strict=True).__class__.__name__ == "PersonalizationResult"
    # one result type whichever door is used, with a one-line repr (the full trace is one attribute away)
    bare, graph = pz.personalize("alice", "x"), personalize("alice", "x", personalizer=pz)
    assert type(bare) is type(graph) is PersonalizationResult
    for res in (bare, graph, personalize("alice", "x", personalizer=pz, composer=pz.composer)):
        text = repr(res)
        assert "\n" not in text and len(text) < 300 and text.startswith("PersonalizationResult(persona_id='alice'")
        assert res.trace.weights and len(res.model_dump_json()) > 5 * len(text)
    with pytest.raises(TypeError):
        personalize("alice", "x", personalizer=pz, colour="red")


def test_text_gate_threshold_from_settings(embedder, two_personas) -> None:
    pz = Personalizer(InMemoryPersonaStore(embedder), settings=VPTTSettings(store="memory", text_gate_threshold=0.99))
    pz.ingest(two_personas)
    r = personalize("alice", "A preferred outdoor spot", personalizer=pz)
    assert r.status == "rejected" and r.text_gate is not None and r.candidates
    assert all(c.score < 0.99 for c in r.candidates)


async def test_apersonalize(pz: Personalizer) -> None:
    from vptt import apersonalize

    r = await apersonalize("bob", "sunset surf", personalizer=pz)
    assert r.prompt == pz.personalize("bob", "sunset surf").prompt


def test_settings_passed_as_the_store_is_a_clear_error() -> None:
    from vptt import ConfigError

    with pytest.raises(ConfigError, match="pass settings as a keyword"):
        Personalizer(VPTTSettings(store="memory"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="store must be a PersonaStore"):
        Personalizer("my-store")  # type: ignore[arg-type]
