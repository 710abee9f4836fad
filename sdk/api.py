"""The module-level front door: ``personalize()`` / ``apersonalize()`` run the agent graph."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.core.models import Persona

_default: Personalizer | None = None
_default_lock = threading.Lock()
_agents: weakref.WeakKeyDictionary[Personalizer, Any] = weakref.WeakKeyDictionary()
_BARE_ONLY = ("config", "composer", "strict")


def default_personalizer() -> Personalizer:
    """The process-wide Personalizer built from ``VPTT_*`` settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Personalizer()
        return _default


def agent_for(personalizer: Personalizer) -> Any:
    """The :class:`~sdk.agent.PersonalizationAgent` that ``personalize()`` runs for this Personalizer.

    One agent (one compiled graph) per Personalizer. Its text gate scores prompts only when
    ``settings.text_gate_threshold`` is set; with no generator the graph stops after the text gate.
    """
    with _default_lock:
        agent = _agents.get(personalizer)
        if agent is None:
            from vptt.agents.gates import TextGateConfig
            from vptt.sdk.agent import PersonalizationAgent

            threshold = personalizer.settings.text_gate_threshold
            gate = TextGateConfig() if threshold is None else TextGateConfig(threshold=threshold)
            agent = PersonalizationAgent(personalizer, text_scorer=None if threshold is None else "vptt",
                                         text_gate=gate)
            _agents[personalizer] = agent
        return agent


def personalize(persona: Persona | str, query: str, *, method: str = "vprag",
                personalizer: Personalizer | None = None, agent: Any = None, thread_id: str | None = None,
                **kwargs: Any) -> PersonalizationResult:
    """Personalize ``query`` for ``persona`` by running the agent graph (load → retrieve → compose → text gate).

    Args:
        persona: a :class:`Persona` or the id of a stored persona.
        query: what the user asked for.
        method: ``vprag`` (default), ``baseline``, ``persona_only``, ``brag`` or ``comb``.
        personalizer: whose store and settings to use (default: built from ``VPTT_*`` settings).
        agent: a configured :class:`~sdk.agent.PersonalizationAgent` (LLM composer, generator, gates).
        thread_id: checkpoint thread of this run (with an agent that has a checkpointer).
        **kwargs: ``config``, ``composer`` or ``strict`` run the bare path
            (:meth:`Personalizer.personalize`) with those per-call settings.

    Returns:
        The result; from the graph it is an :class:`PersonalizationResult` (with
        gate decisions, candidates and images).
    """
    unknown = set(kwargs) - set(_BARE_ONLY)
    if unknown:
        raise TypeError(f"personalize() got unexpected arguments {sorted(unknown)}")
    p = personalizer or (agent.personalizer if agent is not None else default_personalizer())
    if kwargs:
        return p.personalize(persona, query, method=method, **kwargs)
    return (agent or agent_for(p)).run(persona, query, method=method, thread_id=thread_id)


async def apersonalize(persona: Persona | str, query: str, *, method: str = "vprag",
                       personalizer: Personalizer | None = None, agent: Any = None,
                       thread_id: str | None = None) -> PersonalizationResult:
    """Async :func:`personalize` (runs the graph with ``ainvoke``)."""
    p = personalizer or (agent.personalizer if agent is not None else default_personalizer())
    return await (agent or agent_for(p)).arun(persona, query, method=method, thread_id=thread_id)
