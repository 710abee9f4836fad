"""What the routes share: the agent (and its personalizer and store), where images live, the vision chat.

Built once per app from :class:`ServeConfig` (or handed in ready-made, as tests do) and injected into the
routes with ``Depends(service)``.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path
from typing import Any

from fastapi import Request

from vptt.agents.context import AgentContext
from vptt.agents.gate_nodes import image_dir
from vptt.agents.personalizer import Personalizer
from vptt.agents.results import PersonalizationResult
from vptt.core.errors import ConfigError
from vptt.sdk.agent import PersonalizationAgent
from vptt.sdk.server.config import ServeConfig
from vptt.stores.batching import BatchingEmbedder

IMAGE_NAME = re.compile(r"^[0-9a-f]{32}-\d{1,4}\.png$")


class Service:
    """The SDK objects behind the routes.

    Args:
        config: the server's settings.
        agent: a ready agent (default: built from ``config`` and the ``VPTT_*`` settings, with a
            checkpointer for conversations and one image folder per persona).
        context: store location overrides (``data_dir``, ``store``, Chroma host/port) for the default agent.
        vision_chat: the inverse mode's vision chat (default: built from the ``llm`` provider settings).
    """

    def __init__(self, config: ServeConfig, *, agent: PersonalizationAgent | None = None,
                 context: AgentContext | None = None, vision_chat: Any = None) -> None:
        self.config = config
        if agent is None:
            c = config
            base = context or AgentContext()
            ctx = dataclasses.replace(base, composer=c.composer, llm_model=c.llm_model,
                                      llm_base_url=c.llm_base_url, text_gate_threshold=c.text_gate_threshold,
                                      max_candidates=c.max_candidates, generator=c.generator,
                                      generator_model=c.generator_model, images_base_url=c.images_base_url,
                                      steps=c.steps)
            agent = PersonalizationAgent.from_context(ctx, checkpoint=c.threads, persona_subdirs=True,
                                                      auto_thread=False, save_dir=c.save_dir)
            if agent.components.save_dir is None:
                agent.components.save_dir = agent.personalizer.settings.data_dir / "serve-images"
            if c.batch_embeddings and not isinstance(agent.personalizer.embedder, BatchingEmbedder):
                # concurrent requests share query-embedding forwards (the personalizer may be shared)
                agent.personalizer.embedder = BatchingEmbedder(agent.personalizer.embedder)
        self.agent = agent
        self._vision = vision_chat
        self._lock = threading.Lock()

    @property
    def personalizer(self) -> Personalizer:
        return self.agent.personalizer

    @property
    def store(self) -> Any:
        return self.agent.personalizer.store

    def vision_chat(self) -> Any:
        """The vision chat of the inverse mode (``llm`` role: ``VPTT_LLM_BASE_URL`` / ``VPTT_LLM_API_KEY``)."""
        with self._lock:
            if self._vision is None:
                from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig

                s = self.personalizer.settings
                self._vision = JSONChat(LLMConfig(model=self.config.vision_model or s.llm_model,
                                                  base_url=s.base_url("llm"), api_key=s.api_key("llm")))
            return self._vision

    def image_path(self, persona_id: str, name: str) -> Path:
        """The file of one generated image of ``persona_id`` (names are ``<run id>-<attempt>.png``)."""
        if not IMAGE_NAME.match(name):
            raise ConfigError(f"{name!r} is not an image name of this server (<run id>-<attempt>.png)")
        return image_dir(self.agent.components, persona_id) / name

    def payload(self, result: PersonalizationResult) -> dict[str, Any]:
        """The result as JSON for clients: image paths become URLs (no server paths leave the server)."""
        data = result.model_dump(mode="json")
        for rec in data.get("images") or []:
            rec.update(image_links(result.persona_id, rec))
        if data.get("thread_id") and ":" in data["thread_id"]:
            data["thread_id"] = data["thread_id"].split(":", 1)[1]
        return data


def image_links(persona_id: str, record: dict[str, Any]) -> dict[str, str]:
    """``{"path": name, "url": ...}`` of one image record."""
    from urllib.parse import quote

    name = Path(record["path"]).name
    return {"path": name, "url": f"/api/personas/{quote(persona_id, safe='')}/images/{name}"}


def service(request: Request) -> Service:
    """Dependency: the app's :class:`Service`."""
    return request.app.state.service  # type: ignore[no-any-return]
