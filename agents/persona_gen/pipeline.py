"""The VPTT-Bench persona pipeline (supplement 9.2-9.5) against any OpenAI-compatible chat endpoint.

seed text -> demographics (1a) -> bias mitigation -> persona completion (1b) -> visual vocabulary ->
preferences + summary -> scenarios (batches of 6, temperature 0.9) -> 30 captions with per-post elements ->
one DESIGN.md persona. Replies that are not valid JSON, or do not fit the stage's schema, are sent back with
the error and retried (``json_attempts``); every bad reply is reported with its raw text. A post whose
caption never validates is dropped and reported; a profile with fewer than ``min_valid_posts`` valid posts
is excluded and reported. Nothing is dropped silently.

Bias mitigation (9.2.2): when the model's ``location_confidence`` is below the threshold and it placed the
persona in India/South Asia, the United States, the United Kingdom or Canada, the location is re-mapped with
probability 70/65/60/50% to a city of another of the nine region groups of
:data:`~agents.persona_gen.procedural.REGIONS`; the coin and the target are stable hashes of the seed index,
so a re-run makes the same decisions. Gender stays ``"unknown"`` unless the seed states it.

Example:
    >>> chat = JSONChat(LLMConfig(model="Qwen/Qwen2.5-72B-Instruct", base_url="http://localhost:8000/v1",
    ...                           api_key="EMPTY"))                               # doctest: +SKIP
    >>> outcome = generate_persona("A retired ceramicist in Kyoto ...", 0, chat)  # doctest: +SKIP
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from vptt.agents.persona_gen import prompts as P
from vptt.agents.persona_gen.faces import face_attributes, stable_u64
from vptt.agents.persona_gen.procedural import REGIONS
from vptt.core.errors import PersonaValidationError, ProviderError, VPTTError
from vptt.core.models import Persona
from vptt.core.personas import parse_persona
from vptt.core.providers import (
    ProviderAuthError,
    RetryConfig,
    call_with_retry,
    chat_text,
    client_secrets,
    endpoint_label,
    openai_client,
)
from vptt.core.settings import default_request_timeout

T = TypeVar("T")

OVERRIDE_RATES: dict[str, float] = {"south_asia": 0.70, "united_states": 0.65, "united_kingdom": 0.60,
                                    "canada": 0.50}
"""Re-mapping probability per over-represented source region (supplement 9.2.2)."""
_SOURCE = {**{c: "south_asia" for c in ("india", "pakistan", "bangladesh", "sri lanka", "nepal", "bhutan",
                                         "maldives")},
           **{c: "united_states" for c in ("united states", "united states of america", "usa", "us", "u.s.",
                                            "u.s.a.", "america")},
           **{c: "united_kingdom" for c in ("united kingdom", "uk", "u.k.", "england", "scotland", "wales",
                                             "northern ireland", "great britain", "britain")},
           "canada": "canada"}
_SOURCE_GROUP = {"south_asia": "south_asia", "united_states": "north_america", "canada": "north_america",
                 "united_kingdom": "europe"}
_GENDER_CUES = {
    "female": re.compile(r"\b(she|her|hers|herself|woman|women|girl|female|mother|mom|mum|wife|daughter|"
                         r"sister|grandmother|grandma|aunt|niece|mrs|ms|lady)\b", re.IGNORECASE),
    "male": re.compile(r"\b(he|him|his|himself|man|men|boy|male|father|dad|husband|son|brother|grandfather|"
                       r"grandpa|uncle|nephew|mr|gentleman)\b", re.IGNORECASE),
    "non-binary": re.compile(r"\b(non-binary|nonbinary|genderqueer|enby)\b", re.IGNORECASE),
}
"""Words that state a gender in a seed; the model's gender is kept only when the seed has one of its class."""


class LLMConfig(BaseModel):
    """The chat endpoint. ``api_key`` is a secret (hidden in repr and JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "Qwen/Qwen2.5-72B-Instruct"
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, repr=False)
    timeout_s: float = Field(default_factory=lambda: default_request_timeout(180.0), gt=0)
    max_tokens: int = Field(default=3000, ge=64)
    json_mode: bool = Field(default=True, description="send response_format=json_object (vLLM, OpenAI)")
    retry: RetryConfig = Field(default_factory=RetryConfig)


class GenerationConfig(BaseModel):
    """What the pipeline asks for and what it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_posts: int = Field(default=30, ge=1)
    min_valid_posts: int = Field(default=10, ge=0)
    vocab_range: tuple[int, int] = (15, 20)
    vocab_min_accept: int = Field(default=8, ge=1)
    preferences_range: tuple[int, int] = (15, 20)
    preferences_min_accept: int = Field(default=10, ge=1)
    caption_words: tuple[int, int] = (150, 250)
    accept_words: tuple[int, int] = Field(default=(100, 320), description="caption length accepted")
    min_post_categories: int = Field(default=4, ge=0, le=8)
    scenario_batch: int = Field(default=6, ge=1)
    json_attempts: int = Field(default=3, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    scenario_temperature: float = Field(default=0.9, ge=0, le=2)
    location_threshold: float = Field(default=0.6, ge=0, le=1)
    override_rates: dict[str, float] = Field(default_factory=lambda: dict(OVERRIDE_RATES))
    content_mix: dict[str, float] = Field(default_factory=lambda: dict(P.CONTENT_MIX))
    prune_unused: bool = True
    id_prefix: str = "vptt_"


# -- report records ------------------------------------------------------------------------------------------
class MalformedReply(BaseModel):
    """One reply that could not be used: its raw text and why."""

    persona_id: str
    stage: str
    attempt: int
    error: str
    raw: str
    recovered: bool = False


class InvalidPost(BaseModel):
    persona_id: str
    slot: int
    type: str
    reason: str


class ExcludedProfile(BaseModel):
    persona_id: str
    seed_index: int
    reason: str
    valid_posts: int = 0


class MalformedReplyError(VPTTError, ValueError):
    """Every attempt at one stage gave an unusable reply."""

    def __init__(self, stage: str, attempts: int, last_error: str) -> None:
        self.stage, self.attempts = stage, attempts
        super().__init__(f"stage {stage!r}: no usable JSON reply after {attempts} attempt(s): {last_error}")


@dataclass
class PersonaOutcome:
    """The result for one seed: a persona or the reason it was excluded, plus what went wrong on the way."""

    persona_id: str
    seed_index: int
    persona: Persona | None = None
    excluded: ExcludedProfile | None = None
    malformed: list[MalformedReply] = field(default_factory=list)
    invalid_posts: list[InvalidPost] = field(default_factory=list)
    render_failures: dict[str, str] = field(default_factory=dict)


# -- the chat client -----------------------------------------------------------------------------------------
class JSONChat:
    """Chat completions that must return one JSON object; transport retries via ``agents._retry``.

    Args:
        config: the endpoint.
        http_client: an ``httpx.Client`` to send through (tests pass one respx intercepts).
        client: a ready ``openai.OpenAI`` client.
    """

    def __init__(self, config: LLMConfig, *, http_client: Any = None, client: Any = None) -> None:
        self.config = config
        self._http, self._client = http_client, client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JSONChat(model={self.config.model!r}, base_url={endpoint_label(self.config.base_url)!r})"

    @property
    def _secrets(self) -> list[str]:
        return client_secrets(self._client, self.config.api_key)

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = openai_client(api_key=self.config.api_key, base_url=self.config.base_url,
                                             timeout_s=self.config.timeout_s, http_client=self._http,
                                             purpose="the chat endpoint")
            return self._client

    def complete(self, messages: list[dict[str, Any]], *, temperature: float, seed: int | None = None) -> str:
        """The text of one chat completion."""
        c = self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": messages, "temperature": temperature,
                                  "max_tokens": c.max_tokens}
        if c.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if seed is not None:
            kwargs["seed"] = seed
        what = f"chat model {c.model!r} at {endpoint_label(c.base_url)}"
        client = self._get_client()
        resp = call_with_retry(lambda: client.chat.completions.create(**kwargs), what=what, retry=c.retry,
                               secrets=self._secrets)
        return chat_text(resp, what, self._secrets)

    def ask(self, messages: list[dict[str, Any]], validate: Callable[[dict[str, Any]], T], *, stage: str,
            persona_id: str, sink: list[MalformedReply], attempts: int, temperature: float,
            seed: int | None = None) -> T:
        """Ask until ``validate(json)`` accepts a reply; rejected replies go to ``sink`` with their raw text.

        Raises:
            MalformedReplyError: all ``attempts`` replies were rejected.
        """
        msgs, bad, error = list(messages), [], ""
        for attempt in range(1, attempts + 1):
            raw = self.complete(msgs, temperature=temperature,
                                seed=None if seed is None else seed + attempt - 1)
            try:
                value = validate(P.extract_json(raw))
            except (ValueError, TypeError, KeyError) as exc:
                error = str(exc)[:500]
                bad.append(MalformedReply(persona_id=persona_id, stage=stage, attempt=attempt, error=error,
                                          raw=raw))
                msgs = [*messages, {"role": "assistant", "content": raw[:6000]},
                        {"role": "user", "content": P.RETRY_MESSAGE.format(error=error[:300])}]
                continue
            sink.extend(b.model_copy(update={"recovered": True}) for b in bad)
            return value
        sink.extend(bad)
        raise MalformedReplyError(stage, attempts, error)


# -- bias mitigation -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemapDecision:
    """What bias mitigation decided for one seed (``new`` is None when the location was kept)."""

    source: str | None
    confidence: float
    rate: float
    draw: float
    original: dict[str, str]
    new: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "confidence": self.confidence, "rate": self.rate,
                "draw": round(self.draw, 6), "original": self.original, "new": self.new,
                "remapped": self.new is not None}


def source_region(country: str) -> str | None:
    """The over-represented source key of a country name (None if it is not one of them)."""
    return _SOURCE.get(country.strip().lower().removeprefix("the ").strip())


def remap_location(seed_index: int, country: str, city: str, ethnicity: str, confidence: float, *,
                   threshold: float = 0.6, rates: dict[str, float] | None = None) -> RemapDecision:
    """Hash-based diversity re-mapping of a low-confidence location (deterministic in ``seed_index``)."""
    rates = OVERRIDE_RATES if rates is None else rates
    source = source_region(country)
    rate = rates.get(source, 0.0) if source else 0.0
    draw = stable_u64(f"vptt-remap|{seed_index}") / 2**64
    original = {"country": country, "city": city, "ethnicity": ethnicity}
    if confidence >= threshold or draw >= rate:
        return RemapDecision(source, confidence, rate, draw, original)
    targets = [r for k, r in REGIONS.items() if k != _SOURCE_GROUP.get(source or "")]
    region = targets[stable_u64(f"vptt-region|{seed_index}") % len(targets)]
    t_country, t_city, t_eth = region.places[stable_u64(f"vptt-place|{seed_index}") % len(region.places)]
    return RemapDecision(source, confidence, rate, draw, original,
                         {"country": t_country, "city": t_city, "ethnicity": t_eth, "region": region.key})


def resolve_gender(gender: str, stated: bool, seed_text: str) -> str:
    """The model's gender only when it says the seed states it AND the seed has a word of that gender.

    Example:
        >>> resolve_gender("female", True, "She runs a bakery."), resolve_gender("female", True, "A baker.")
        ('female', 'unknown')
    """
    g = (gender or "").strip().lower()
    label = ("non-binary" if "binary" in g else "female" if re.search(r"female|woman|\bf\b", g)
             else "male" if re.search(r"male|\bman\b|\bm\b", g) else None)
    if stated and label and _GENDER_CUES[label].search(seed_text):
        return label
    return "unknown"


# -- one persona ---------------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    chat: JSONChat
    cfg: GenerationConfig
    out: PersonaOutcome

    def ask(self, messages: list[dict[str, Any]], validate: Callable[[dict[str, Any]], T], stage: str, *,
            temperature: float | None = None, salt: str = "") -> T:
        seed = stable_u64(f"llm|{self.out.persona_id}|{stage}|{salt}") % 2**31
        return self.chat.ask(messages, validate, stage=stage, persona_id=self.out.persona_id,
                             sink=self.out.malformed, attempts=self.cfg.json_attempts,
                             temperature=self.cfg.temperature if temperature is None else temperature,
                             seed=seed)


def persona_id_for(seed_index: int, prefix: str = "vptt_") -> str:
    """The stable id of the persona made from seed ``seed_index``."""
    return f"{prefix}{seed_index:06d}"


def _demographics(ctx: _Ctx, seed_text: str, seed_index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    d = ctx.ask(P.demographics_messages(seed_text), P.validate_demographics, "demographics")
    gender = resolve_gender(d["gender"], d["gender_stated_in_seed"], seed_text)
    remap = remap_location(seed_index, d["country"], d["city"], d["ethnicity"], d["location_confidence"],
                           threshold=ctx.cfg.location_threshold, rates=ctx.cfg.override_rates)
    place = {k: v for k, v in (remap.new or remap.original).items() if k != "region"}
    scaffold = {"age": d["age"], "gender": gender, **place}
    comp = ctx.ask(P.completion_messages(seed_text, scaffold), P.validate_completion, "completion")
    info = {"location_confidence": d["location_confidence"], "location_evidence": d["location_evidence"],
            "gender_stated_in_seed": d["gender_stated_in_seed"], "model_gender": d["gender"],
            "bias_remap": remap.as_dict()}
    return {**scaffold, **comp}, info


def _posts(ctx: _Ctx, context: dict[str, Any], slots: list[P.PostSlot]) -> list[dict[str, Any]]:
    cfg, out = ctx.cfg, ctx.out
    scenarios: dict[int, dict[str, str]] = {}
    for start in range(0, len(slots), cfg.scenario_batch):
        batch = slots[start:start + cfg.scenario_batch]
        earlier = [s["title"] or s["scenario"][:80] for s in scenarios.values()]
        try:
            scenarios.update(ctx.ask(P.scenarios_messages(context, batch, earlier),
                                     P.scenarios_validator(batch), "scenarios",
                                     temperature=cfg.scenario_temperature, salt=str(start)))
        except MalformedReplyError as exc:
            out.invalid_posts += [InvalidPost(persona_id=out.persona_id, slot=s.index, type=s.type,
                                              reason=str(exc)) for s in batch]
    check = P.caption_validator(cfg.accept_words, cfg.caption_words, cfg.min_post_categories)
    posts = []
    for slot in slots:
        if slot.index not in scenarios:
            continue
        sc = scenarios[slot.index]
        try:
            cap = ctx.ask(P.caption_messages(context, slot, sc["scenario"], *cfg.caption_words), check,
                          "caption", salt=str(slot.index))
        except MalformedReplyError as exc:
            out.invalid_posts.append(InvalidPost(persona_id=out.persona_id, slot=slot.index, type=slot.type,
                                                 reason=str(exc)))
            continue
        posts.append({"post_id": f"{out.persona_id}_{slot.index:03d}", "type": slot.type, **cap,
                      "scenario_title": sc["title"], "scenario": sc["scenario"],
                      "time_of_day": slot.time_of_day, "season": slot.season, "social": slot.social})
    return posts


def prune_vocabulary(vocab: dict[str, list[str]], posts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Vocabulary entries used by some post (in its elements or caption, case-insensitive); empty ones go."""
    used = {t.lower() for p in posts for items in p["elements"].values() for t in items}
    text = " ".join(p["caption"].lower() for p in posts)
    out = {c: [t for t in items if t.lower() in used or t.lower() in text] for c, items in vocab.items()}
    return {c: v for c, v in out.items() if v}


def _profile(ctx: _Ctx, demo: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Visual vocabulary, then preferences + summary."""
    cfg = ctx.cfg
    vlo, vhi = cfg.vocab_range
    vocab = ctx.ask(P.vocabulary_messages(demo, vlo, vhi), lambda d: P.elements_map(
        d.get("elements", d), min_per_category=cfg.vocab_min_accept, max_per_category=vhi), "vocabulary")
    plo, phi = cfg.preferences_range
    prefs = ctx.ask(P.preferences_messages(demo, vocab, plo, phi), lambda d: {
        "preferences": P.string_list(d.get("preferences"), "preferences", min_len=cfg.preferences_min_accept,
                                     max_len=phi),
        "summary": P.text_field(d, "summary")}, "preferences")
    return vocab, prefs


_CORE = ("age", "gender", "country", "city", "ethnicity", "occupation", "interests", "personality",
         "social_media_tone")


def _assemble(ctx: _Ctx, seed_text: str, demo: dict[str, Any], info: dict[str, Any],
              vocab: dict[str, list[str]], prefs: dict[str, Any], posts: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """The persona record: DESIGN.md fields, then how it was made in ``extra``."""
    cfg, out = ctx.cfg, ctx.out
    demographics = {k: demo[k] for k in _CORE if k in demo}
    demographics |= {k: v for k, v in demo.items() if k not in _CORE}
    generation = {"seed_index": out.seed_index, "seed_text": seed_text, **info,
                  "planned_mix": P.content_type_counts(cfg.n_posts, cfg.content_mix),
                  "post_mix": {t: sum(p["type"] == t for p in posts) for t in cfg.content_mix},
                  "vocabulary_size": sum(map(len, vocab.values())), "invalid_posts": len(out.invalid_posts)}
    return {"persona_id": out.persona_id, "demographics": demographics, "summary": prefs["summary"],
            "preferences": prefs["preferences"],
            "elements": prune_vocabulary(vocab, posts) if cfg.prune_unused else vocab, "posts": posts,
            "extra": {"generator": f"llm:{ctx.chat.config.model}", "generation": generation,
                      "face": face_attributes(out.persona_id, demo["age"]).as_dict()}}


def generate_persona(seed_text: str, seed_index: int, chat: JSONChat, config: GenerationConfig | None = None,
                     ) -> PersonaOutcome:
    """Run the whole pipeline for one seed; never raises for bad replies (see the outcome's fields).

    Raises:
        ProviderAuthError: the endpoint refused the key (every other persona would fail too).
    """
    cfg = config or GenerationConfig()
    pid = persona_id_for(seed_index, cfg.id_prefix)
    out = PersonaOutcome(pid, seed_index)
    ctx = _Ctx(chat, cfg, out)
    try:
        demo, info = _demographics(ctx, seed_text, seed_index)
        vocab, prefs = _profile(ctx, demo)
        context = {"persona": {**demo, "summary": prefs["summary"], "preferences": prefs["preferences"],
                               "vocabulary": vocab}}
        slots = P.plan_slots(cfg.n_posts, stable_u64(f"slots|{pid}") % 2**32, cfg.content_mix)
        posts = _posts(ctx, context, slots)
    except ProviderAuthError:
        raise
    except (MalformedReplyError, ProviderError) as exc:
        out.excluded = ExcludedProfile(persona_id=pid, seed_index=seed_index, reason=str(exc))
        return out
    if len(posts) < cfg.min_valid_posts:
        reason = f"only {len(posts)} valid post(s), fewer than {cfg.min_valid_posts}"
        out.excluded = ExcludedProfile(persona_id=pid, seed_index=seed_index, valid_posts=len(posts),
                                       reason=reason)
        return out
    try:
        out.persona = parse_persona(_assemble(ctx, seed_text, demo, info, vocab, prefs, posts),
                                    file=f"<generated {pid}>")
    except PersonaValidationError as exc:
        out.excluded = ExcludedProfile(persona_id=pid, seed_index=seed_index, valid_posts=len(posts),
                                       reason=f"assembled persona is invalid: {exc}")
    return out
