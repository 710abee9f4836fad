"""Quickstart: ingest the sample personas into an in-memory store and compare the paper's methods.

Run: HF_HUB_OFFLINE=1 .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

from vptt import InMemoryPersonaStore, MiniLMEmbedder, Personalizer, load_personas
from vptt.data import SAMPLE_PERSONAS as DATA


def main() -> None:
    personas = [p for p in load_personas(DATA) if p.persona_id in ("p09_venice_glassblower", "p17_outback_vet")]
    pz = Personalizer(InMemoryPersonaStore(MiniLMEmbedder()))
    print(pz.ingest(personas))
    for persona in personas:
        print(f"\n== {persona.persona_id}")
        for method in ("baseline", "persona_only", "brag", "vprag", "comb"):
            r = pz.personalize(persona.persona_id, "A preferred outdoor spot", method=method)
            print(f"{method:>12}: {r.prompt[:160]}")
        r = pz.personalize(persona.persona_id, "A preferred outdoor spot")
        print(f"entropy={r.trace.entropy:.3f} n_eff={r.trace.n_eff:.2f} K={r.trace.k} "
              f"categories={[c.category for c in r.trace.categories[:3]]}")


if __name__ == "__main__":
    main()
