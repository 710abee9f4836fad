"""Deterministic face attributes and the render prompts of VPTT supplement 10.1-10.2.

Each persona gets ten facial attributes (4-6 options each), an age-adapted detail, an expression and a photo
style, all drawn from ``seed = sha256(f"{user_id}|{age // 10}")[:8 bytes] mod 2**32`` (a stable hash, never
Python's salted ``hash()``): the same persona in the same decade of life always gets the same face. Every draw
hashes ``(seed, attribute name)`` on its own, so attributes are independent and uniform.

The paper's option lists are not published; ours give ``combinations()`` = 8,640,000 attribute combinations,
times 6 expressions, 5 photo styles and 2 age details per decade.

Rendering (optional) follows the two phases of 10.2: a text-to-image portrait from demographics + face, then
one image per post edited from that portrait (appreciation posts: the scene alone, with people as negative).
Pronouns in render prompts are replaced by "this person".

Example:
    >>> face_seed("p01", 34) == face_seed("p01", 38)
    True
    >>> face_attributes("p01", 34) == face_attributes("p01", 34)
    True
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vptt.core.models import Persona, Post
from vptt.core.paths import path_for_id

FACE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "face_shape": ("oval", "round", "square", "heart-shaped", "diamond", "oblong"),
    "eye_shape": ("almond", "round", "hooded", "monolid", "upturned", "downturned"),
    "eye_size": ("small", "medium", "large", "wide-set"),
    "nose_type": ("straight", "button", "aquiline", "broad", "snub", "Roman"),
    "jawline": ("soft", "defined", "square", "rounded", "angular"),
    "cheekbones": ("high", "prominent", "subtle", "wide"),
    "lip_shape": ("full", "thin", "bow-shaped", "wide", "heart-shaped"),
    "eyebrow_type": ("straight", "arched", "thick", "thin", "rounded"),
    "face_length": ("short", "average", "long", "slightly long"),
    "chin_shape": ("pointed", "rounded", "square", "cleft", "soft"),
}
"""The ten facial attributes of supplement 10.1 and their options."""
AGE_DETAILS: dict[int, tuple[str, str]] = {
    0: ("youthful features", "bright eyes"), 2: ("bright eyes", "smooth skin"),
    3: ("faint smile lines", "clear skin"), 4: ("subtle crow's feet", "a few grey hairs"),
    5: ("laugh lines", "greying temples"), 6: ("wisdom lines", "silver hair"),
}
"""Age-adapted details per decade (decades 1 -> 0, 7+ -> 6)."""
EXPRESSIONS: tuple[str, ...] = ("confident", "warm smiling", "calm", "thoughtful", "joyful", "serene")
PHOTO_STYLES: tuple[str, ...] = ("professional portrait", "natural-light candid portrait", "studio headshot",
                                 "environmental portrait", "35mm film portrait")
NO_PEOPLE_NEGATIVE = "person, people, human, face, body, portrait"
PORTRAIT_SIZE = (1344, 768)
"""Width, height of the Phase-1 portrait (supplement 10.2)."""
RENDER_MODES: dict[str, dict[str, float]] = {
    "standard": {"portrait_steps": 50, "portrait_cfg": 0.0, "post_steps": 40, "post_cfg": 4.0},
    "lightning": {"portrait_steps": 8, "portrait_cfg": 0.0, "post_steps": 8, "post_cfg": 4.5},
}
"""Steps/CFG of 10.2 (recorded in each render prompt; the generator's own config decides what runs)."""


def stable_u64(text: str) -> int:
    """First 8 bytes of sha256(text) as a big-endian integer (stable across processes and platforms)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def face_seed(user_id: str, age: int | None) -> int:
    """``hash(user_id, age // 10) mod 2**32`` with sha256; an unknown age uses the group ``na``."""
    group = "na" if age is None else str(age // 10)
    return stable_u64(f"{user_id}|{group}") % 2**32


def _pick(seed: int, name: str, options: tuple[str, ...]) -> str:
    return options[stable_u64(f"{seed}|{name}") % len(options)]


@dataclass(frozen=True)
class Face:
    """The drawn face of one persona."""

    seed: int
    attributes: dict[str, str]
    age_detail: str
    expression: str
    photo_style: str

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "attributes": dict(self.attributes), "age_detail": self.age_detail,
                "expression": self.expression, "photo_style": self.photo_style}


def face_attributes(user_id: str, age: int | None) -> Face:
    """The deterministic face of ``user_id`` at ``age`` (same decade -> same face)."""
    seed = face_seed(user_id, age)
    attrs = {name: _pick(seed, name, opts) for name, opts in FACE_ATTRIBUTES.items()}
    decade = min(max((30 if age is None else age) // 10, 0), 6)
    details = AGE_DETAILS[decade if decade >= 2 else 0]
    return Face(seed, attrs, _pick(seed, "age_detail", details), _pick(seed, "expression", EXPRESSIONS),
                _pick(seed, "photo_style", PHOTO_STYLES))


def combinations() -> int:
    """Distinct combinations of the ten facial attributes."""
    return math.prod(len(o) for o in FACE_ATTRIBUTES.values())


# -- render prompts ------------------------------------------------------------------------------------------
_PRONOUNS = [(r"\b(?:he|she)\b", "this person"), (r"\b(?:him)\b", "this person"),
             (r"\b(?:his|hers)\b", "this person's"), (r"\bher\b", "this person's"),
             (r"\b(?:himself|herself)\b", "themself")]


def neutralize_pronouns(text: str) -> str:
    """Gendered pronouns replaced by "this person" (supplement 10.2); "her" is read as possessive."""
    for pattern, repl in _PRONOUNS:
        text = re.sub(pattern, lambda m, r=repl: r[0].upper() + r[1:] if m.group(0)[0].isupper() else r, text,
                      flags=re.IGNORECASE)
    return text


@dataclass(frozen=True)
class RenderPrompt:
    """One image to render: prompt, negative prompt, seed and the paper's settings."""

    key: str
    prompt: str
    seed: int
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def portrait_prompt(persona: Persona, face: Face | None = None, mode: str = "standard") -> RenderPrompt:
    """Phase 1: "photo of a person, {gender}, {ethnicity}, {age} years old, works as ..., {face}, ..."."""
    d = persona.demographics
    face = face or face_attributes(persona.persona_id, d.age)
    a = face.attributes
    parts = ["photo of a person"]
    if d.gender.strip() and d.gender.strip().lower() != "unknown":
        parts.append(d.gender.strip())
    if d.ethnicity.strip():
        parts.append(d.ethnicity.strip())
    if d.age is not None:
        parts.append(f"{d.age} years old")
    if d.occupation.strip():
        parts.append(f"works as {d.occupation.strip()}")
    place = ", ".join(x.strip() for x in (d.city, d.country) if x.strip())
    if place:
        parts.append(f"from {place}")
    parts += [f"{a['face_shape']} face shape", f"{a['eye_shape']} {a['eye_size']} eyes",
              f"{a['nose_type']} nose", f"{a['jawline']} jawline", f"{a['cheekbones']} cheekbones",
              f"{a['lip_shape']} lips", f"{a['eyebrow_type']} eyebrows", f"{a['face_length']} face length",
              f"{a['chin_shape']} chin",
              face.age_detail, face.photo_style, f"{face.expression} expression", "natural lighting"]
    m = RENDER_MODES[mode]
    return RenderPrompt("portrait", ", ".join(parts), face.seed, None, *PORTRAIT_SIZE,
                        {"steps": m["portrait_steps"], "cfg": m["portrait_cfg"], "phase": 1})


def post_prompt(persona: Persona, post: Post, face: Face | None = None, mode: str = "standard"
                ) -> RenderPrompt:
    """Phase 2: "{caption}, wearing {clothing}, with {expression}, {pose}." or, for appreciation posts, the
    scene alone with people as the negative prompt. Pronouns become "this person"."""
    face = face or face_attributes(persona.persona_id, persona.demographics.age)
    caption = neutralize_pronouns(post.caption.strip().rstrip("."))
    m = RENDER_MODES[mode]
    params = {"steps": m["post_steps"], "cfg": m["post_cfg"], "phase": 2, "type": post.type}
    seed = stable_u64(f"{face.seed}|{post.post_id}") % 2**32
    if post.type == "appreciation":
        return RenderPrompt(post.post_id, caption, seed, NO_PEOPLE_NEGATIVE, params=params)
    clothing = ", ".join(post.elements.get("appearance", [])[:2]) or "everyday clothes"
    pose = ", ".join(post.elements.get("actions", [])[:1]) or "natural pose"
    text = f"{caption}, wearing {neutralize_pronouns(clothing)}, with {face.expression} expression, {pose}."
    return RenderPrompt(post.post_id, text, seed, None, params=params)


# -- rendering -----------------------------------------------------------------------------------------------
@dataclass
class RenderResult:
    """What :func:`render_persona` drew: the persona with image paths set, and any failures."""

    persona: Persona
    portrait: str | None
    images: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _generate(generator: Any, rp: RenderPrompt, init_image: Any) -> Any:
    """Call an ``ImageGenerator`` (a request) or any object with ``generate(prompt, *, seed, init_image)``."""
    try:
        from vptt.agents.generators.base import GenerationRequest, ImageGenerator
    except ImportError:  # pragma: no cover - the generators package is part of the SDK
        ImageGenerator = None  # type: ignore[assignment,misc]  # noqa: N806
    if ImageGenerator is not None and isinstance(generator, ImageGenerator):
        return generator.generate(GenerationRequest(prompt=rp.prompt, seed=rp.seed, init_image=init_image,
                                                    negative_prompt=rp.negative_prompt, width=rp.width,
                                                    height=rp.height))
    kwargs: dict[str, Any] = {"seed": rp.seed, "init_image": init_image}
    if rp.negative_prompt and "negative_prompt" in inspect.signature(generator.generate).parameters:
        kwargs["negative_prompt"] = rp.negative_prompt
    return generator.generate(rp.prompt, **kwargs)


def render_persona(persona: Persona, generator: Any, out_dir: str | os.PathLike[str], *,
                   mode: str = "standard", max_posts: int | None = None, edit: bool = True) -> RenderResult:
    """Render the portrait, then each post edited from it (10.2).

    Images go to ``out_dir/<persona>/portrait.png`` and ``out_dir/<persona>/posts/<post>.png``, the names
    encoded by :func:`vptt.core.paths.id_to_filename` (no id can write outside ``out_dir`` or share a file).

    Args:
        persona: the persona to render.
        generator: an :class:`agents.generators.ImageGenerator` or any object with
            ``generate(prompt, *, seed, init_image)`` returning something with an ``image`` (PIL) attribute.
        out_dir: where the PNGs go; posts get ``image`` set to their file path.
        mode: ``"standard"`` or ``"lightning"`` (steps/CFG recorded with each prompt).
        max_posts: render only the first ``max_posts`` posts (``None``: all).
        edit: condition post images on the portrait when the generator can edit.

    A failed image is recorded in ``failures`` (key -> error) and the rest continue.
    """
    if mode not in RENDER_MODES:
        raise ValueError(f"mode must be one of {list(RENDER_MODES)}, got {mode!r}")
    folder = path_for_id(out_dir, persona.persona_id)  # ids never escape out_dir nor collide
    folder.mkdir(parents=True, exist_ok=True)
    face = face_attributes(persona.persona_id, persona.demographics.age)
    result = RenderResult(persona, None)
    portrait_img = None
    try:
        portrait_img = _generate(generator, portrait_prompt(persona, face, mode), None).image
        result.portrait = str(folder / "portrait.png")
        portrait_img.save(result.portrait)
    except Exception as exc:  # noqa: BLE001 - recorded, the posts still render
        result.failures["portrait"] = f"{type(exc).__name__}: {exc}"
    can_edit = edit and portrait_img is not None and getattr(generator, "supports_edit", True)
    posts = []
    for i, post in enumerate(persona.posts):
        if max_posts is not None and i >= max_posts:
            posts.append(post)
            continue
        rp = post_prompt(persona, post, face, mode)
        try:
            img = _generate(generator, rp, portrait_img if can_edit else None).image
            path = str(path_for_id(folder / "posts", post.post_id, suffix=".png"))
            Path(path).parent.mkdir(exist_ok=True)
            img.save(path)
            result.images[post.post_id] = path
            post = post.model_copy(update={"image": path})
        except Exception as exc:  # noqa: BLE001
            result.failures[post.post_id] = f"{type(exc).__name__}: {exc}"
        posts.append(post)
    extra = {**persona.extra, "portrait": result.portrait, "face": face.as_dict()}
    result.persona = persona.model_copy(update={"posts": posts, "extra": extra})
    return result
