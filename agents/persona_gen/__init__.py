"""VPTT-Bench persona simulation: LLM pipeline, deterministic faces, offline procedural data, inverse mode.

* :func:`generate_personas` / :func:`generate_persona` -- the paper's pipeline (supplement 9) against any
  OpenAI-compatible chat endpoint (:class:`JSONChat`), writing DESIGN.md JSONL plus a report.
* :func:`face_attributes`, :func:`portrait_prompt`, :func:`post_prompt`, :func:`render_persona` -- supplement
  10.
* :func:`generate_procedural` -- offline smoke-test personas (labelled as such; not LLM-generated).
* :func:`ingest_photos` -- inverse mode: a user's photos -> captions -> elements -> preferences -> persona.

CLI: ``vptt bench generate`` and ``vptt ingest-photos`` (see :mod:`agents.persona_gen._cli`).
"""

from __future__ import annotations

from vptt.agents.persona_gen.faces import (
                    FACE_ATTRIBUTES,
                    Face,
                    RenderPrompt,
                    RenderResult,
                    face_attributes,
                    face_seed,
                    portrait_prompt,
                    post_prompt,
                    render_persona,
)
from vptt.agents.persona_gen.inverse import (
                    InverseConfig,
                    InverseResult,
                    build_persona_from_photos,
                    ingest_photos,
)
from vptt.agents.persona_gen.pipeline import (
                    OVERRIDE_RATES,
                    ExcludedProfile,
                    GenerationConfig,
                    InvalidPost,
                    JSONChat,
                    LLMConfig,
                    MalformedReply,
                    MalformedReplyError,
                    PersonaOutcome,
                    RemapDecision,
                    generate_persona,
                    remap_location,
                    resolve_gender,
)
from vptt.agents.persona_gen.procedural import (
                    PROCEDURAL_LABEL,
                    REGIONS,
                    generate_procedural,
                    procedural_persona,
)
from vptt.agents.persona_gen.prompts import CONTENT_MIX, PostSlot, content_type_counts, plan_slots
from vptt.agents.persona_gen.runner import (
                    GenerationReport,
                    generate_personas,
                    load_seeds,
                    select_seeds,
                    write_procedural,
)

__all__ = [
    "CONTENT_MIX", "FACE_ATTRIBUTES", "OVERRIDE_RATES", "PROCEDURAL_LABEL", "REGIONS", "ExcludedProfile",
    "Face", "GenerationConfig", "GenerationReport", "InvalidPost", "InverseConfig", "InverseResult",
    "JSONChat", "LLMConfig", "MalformedReply", "MalformedReplyError", "PersonaOutcome", "PostSlot",
    "RemapDecision", "RenderPrompt", "RenderResult", "build_persona_from_photos", "content_type_counts",
    "face_attributes", "face_seed", "generate_persona", "generate_personas", "generate_procedural",
    "ingest_photos", "load_seeds", "plan_slots", "portrait_prompt", "post_prompt", "procedural_persona",
    "remap_location", "render_persona", "resolve_gender", "select_seeds", "write_procedural",
]
