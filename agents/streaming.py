"""Events a chat UI can show while the graph runs.

Two channels, both standard LangGraph:

* ``stream_mode="custom"``: plain dicts written by the nodes, each with an ``"event"`` key:
  ``retrieval`` (the retrieval trace), ``token`` (a text delta of the composer), ``candidate`` (a prompt
  the text gate scored, with its score), ``gate`` (a gate decision: ``gate`` is ``text`` or ``image``),
  ``image`` (an image was generated and saved) and ``progress`` (a denoising step).
* ``stream_mode="messages"``: the LLM composer's deltas as LangChain ``AIMessageChunk`` objects (through the
  run's callback manager, exactly as a LangChain chat model reports them), and the turn's final
  ``AIMessage`` (the chosen prompt) when the run ends.

Example:
    >>> for mode, chunk in graph.stream(inputs, stream_mode=["custom", "messages"]):  # doctest: +SKIP
    ...     print(mode, chunk)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

EVENTS = ("retrieval", "token", "candidate", "gate", "image", "progress")
"""The ``event`` values of custom stream chunks."""


class TokenStream:
    """Forwards one composer call's text deltas as ``token`` events and as LangChain chat-model tokens.

    Call it with each delta; call :meth:`end` with the final prompt (or :meth:`error`). Outside a graph run
    (no LangGraph config) only the writer is used.
    """

    def __init__(self, writer: Callable[[Any], None], candidate: int, name: str) -> None:
        self.writer, self.candidate, self.name = writer, candidate, name
        self.message_id = f"run-{uuid.uuid4()}"
        self._run: Any = None
        self._started = False

    def _start(self) -> None:
        self._started = True
        try:
            from langchain_core.runnables.config import get_callback_manager_for_config
            from langgraph.config import get_config

            manager = get_callback_manager_for_config(get_config())
        except RuntimeError:  # not inside a runnable context: no callbacks to report to
            return
        runs = manager.on_chat_model_start({"name": self.name}, [[]], name=self.name,
                                           invocation_params={"candidate": self.candidate})
        self._run = runs[0] if runs else None

    def __call__(self, text: str) -> None:
        if not self._started:
            self._start()
        if self._run is not None:
            from langchain_core.messages import AIMessageChunk
            from langchain_core.outputs import ChatGenerationChunk

            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text, id=self.message_id))
            self._run.on_llm_new_token(text, chunk=chunk)
        self.writer({"event": "token", "candidate": self.candidate, "text": text})

    def end(self, prompt: str) -> None:
        """Close the chat-model run with the cleaned final prompt."""
        if self._run is None:
            return
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, LLMResult

        message = AIMessage(content=prompt, id=self.message_id)
        self._run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))

    def error(self, exc: BaseException) -> None:
        """Close the chat-model run as failed."""
        if self._run is not None:
            self._run.on_llm_error(exc)
