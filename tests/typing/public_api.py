"""Type-checked (never run) usage of the public API: `tests/test_typing.py` runs mypy on this file.

Each `assert_type` fails the check if a public name stops being typed (e.g. degrades to `Any`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from typing_extensions import assert_type

import vptt
from vptt import (
    ConfigError,
    IngestReport,
    InMemoryPersonaStore,
    MiniLMEmbedder,
    Persona,
    PersonaList,
    PersonalizationAgent,
    PersonalizationResult,
    Personalizer,
    PersonaNotFoundError,
    RetrievalTrace,
    VPRAGConfig,
    VPTTError,
    VPTTSettings,
    load_personas,
    personalize,
)
from vptt.data import SAMPLE_PERSONAS


def use_the_front_door(path: Path) -> None:
    personas = load_personas(path, on_error="skip")
    assert_type(personas, PersonaList)
    first = personas[0]
    assert_type(first, Persona)
    assert_type(first.persona_id, str)

    settings = VPTTSettings(tau=0.2, store="memory")
    assert_type(settings.tau, float)
    assert_type(settings.api_key("llm"), "str | None")

    pz = Personalizer(InMemoryPersonaStore(MiniLMEmbedder()), settings=settings, config=VPRAGConfig(tau=0.1))
    report = pz.ingest(SAMPLE_PERSONAS)
    assert_type(report, IngestReport)
    assert_type(report.created, list[str])

    result = pz.personalize("p01_kyoto_ceramicist", "A preferred outdoor spot", method="brag")
    assert_type(result, PersonalizationResult)
    assert_type(result.prompt, str)
    assert_type(result.trace, RetrievalTrace)
    assert_type(result.trace.n_eff, "float | None")
    assert_type(result.accepted, bool)

    again = personalize(first, "A cultural site", personalizer=pz)
    assert_type(again, PersonalizationResult)
    assert_type(vptt.personalize(first, "A garden", personalizer=pz), PersonalizationResult)

    agent = PersonalizationAgent(pz)
    status = agent.run(first, "A garden").status
    assert_type(status, Literal["deferred", "rejected", "completed", "image_rejected"])


def errors_are_builtins_too() -> None:
    try:
        VPTTSettings(tau=-1)
    except ConfigError as exc:
        assert_type(exc, ConfigError)
        assert isinstance(exc, ValueError) and isinstance(exc, VPTTError)
    try:
        raise PersonaNotFoundError("nobody")
    except KeyError:
        pass
