"""The LLM-composer options shared by ``vptt evaluate`` and ``vptt bench run``.

``--composer llm`` composes with an OpenAI-compatible chat endpoint; ``--llm-preset`` takes the paper's
settings (supplement Sec. 16) and explicit ``--temperature/--top-p/--max-tokens/--seed`` override them. The key
is ``settings.api_key("llm")``: ``VPTT_LLM_API_KEY``, else ``OPENAI_API_KEY``.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from vptt.core.errors import ConfigError

COMPOSER = typer.Option("template", "--composer", help="template (offline) or llm (an OpenAI-compatible chat "
                                                       "endpoint: --llm-base-url, --llm-model).")
LLM_BASE_URL = typer.Option(None, "--llm-base-url", help="Chat endpoint, e.g. http://localhost:8000/v1 "
                                                         "(default: $VPTT_LLM_BASE_URL, else OpenAI's).")
LLM_MODEL = typer.Option(None, "--llm-model", help="Model name the endpoint serves (default: the preset's, "
                                                   "else $VPTT_LLM_MODEL).")
LLM_PRESET = typer.Option(None, "--llm-preset", help="The paper's settings: qwen2.5-7b-instruct (T=0.1, top-p "
                                                     "0.9, 256 tokens, seed 42), gpt-4o-mini (T=0.1, seed 42) "
                                                     "or gemini-2.5-pro (T=0.7, top-p 0.95).")
TEMPERATURE = typer.Option(None, "--temperature", help="LLM sampling temperature (overrides the preset).")
TOP_P = typer.Option(None, "--top-p", help="LLM nucleus sampling top-p (overrides the preset).")
MAX_TOKENS = typer.Option(None, "--max-tokens", help="LLM completion token limit (overrides the preset).")
CONCURRENCY = typer.Option(None, "--llm-concurrency", help="LLM requests in flight (default 16, or "
                                                           "$VPTT_LLM_CONCURRENCY; shared among Ray workers).")
RPM = typer.Option(None, "--llm-rpm", help="LLM requests per minute at most (default: unlimited).")
TPM = typer.Option(None, "--llm-tpm", help="LLM tokens per minute at most (default: unlimited).")
TIMEOUT = typer.Option(None, "--llm-timeout", help="Hard limit of one LLM request in seconds "
                                                   "(default: $VPTT_REQUEST_TIMEOUT_S, 60).")
CACHE = typer.Option(None, "--llm-cache/--no-llm-cache", help="Keep completions in <data-dir>/llm_cache.sqlite "
                                                             "and never buy one twice (default on).")


def llm_config(settings: Any, *, composer: str, base_url: Optional[str], model: Optional[str],
               preset: Optional[str], temperature: Optional[float], top_p: Optional[float],
               max_tokens: Optional[int], seed: Optional[int], concurrency: Optional[int],
               rpm: Optional[float], tpm: Optional[float], timeout: Optional[float],
               cache: Optional[bool]) -> Any:
    """The :class:`~agents.llm_composer.LLMComposerConfig` of these options, or None for the template composer.

    Raises:
        ConfigError: an unknown composer or preset, or LLM options given with ``--composer template``.
    """
    from vptt.agents.llm_composer import LLMComposerConfig

    if composer not in ("template", "llm"):
        raise ConfigError(f"--composer must be template or llm, got {composer!r}")
    sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
    if composer == "template":
        given = [k for k, v in {"--llm-base-url": base_url, "--llm-model": model, "--llm-preset": preset,
                                **sampling}.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --composer llm")
        return None
    if model is None and (preset is None or "llm_model" in settings.model_fields_set):
        model = settings.llm_model
    values: dict[str, Any] = {
        "model": model, "base_url": base_url or settings.base_url("llm"), "api_key": settings.api_key("llm"),
        "concurrency": concurrency or settings.llm_concurrency,
        "requests_per_min": rpm or settings.llm_requests_per_min,
        "tokens_per_min": tpm or settings.llm_tokens_per_min,
        "timeout_s": timeout or settings.request_timeout_s,
        "cache": settings.llm_cache if cache is None else cache,
        "include_summary": settings.include_summary, **sampling}
    if preset:
        return LLMComposerConfig.from_preset(preset, **values)
    return LLMComposerConfig(**{k: v for k, v in values.items() if v is not None})
