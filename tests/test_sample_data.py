"""The bundled sample persona set: valid, diverse, and good enough to show VPRAG working."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT, SAMPLE
from vptt import Personalizer, load_personas
from vptt.stores.memory import InMemoryPersonaStore


def test_sample_set_passes_quality_checks(capsys) -> None:
    spec = importlib.util.spec_from_file_location("check_personas", ROOT / "examples/data/check_personas.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(SAMPLE)]) == 0, capsys.readouterr().out


def test_sample_set_is_diverse() -> None:
    personas = load_personas(SAMPLE)
    assert len(personas) >= 24 and all(len(p.posts) == 30 for p in personas)
    assert len({p.demographics.country for p in personas}) >= 20
    assert len({p.demographics.occupation for p in personas}) == len(personas)
    ages = [p.demographics.age for p in personas]
    assert min(ages) < 25 and max(ages) > 65


def test_vprag_retrieves_the_relevant_posts_on_real_data(embedder) -> None:
    persona = next(p for p in load_personas(SAMPLE) if p.persona_id == "p05_tromso_fisherman")
    pz = Personalizer(InMemoryPersonaStore(embedder))
    r = pz.personalize(persona, "northern lights over a frozen fjord at night")
    top = [persona.post(cp.post_id).caption.lower() for cp in r.trace.chosen_posts[:3]]
    assert all("aurora" in c or "northern lights" in c for c in top)
    assert r.trace.categories[0].category in ("lighting", "environment", "background")
    broad = pz.personalize(persona, "a photo")
    assert broad.trace.n_eff > r.trace.n_eff  # a broad query spreads the weights (higher entropy)
    assert r.trace.kept_elements()
