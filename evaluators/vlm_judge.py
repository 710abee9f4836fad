"""VLM judge for persona similarity (VPTT paper, supplement 15.1).

The judge sees a numbered profile canvas (up to 10 of the persona's posts in a 5 x 2 grid), a methods canvas
(the generated images side by side under blind labels A-E, shuffled per persona), the base prompt and, for
editing, the input image. It answers one ``X: Score=S - reason`` line per label; :func:`parse_judge_reply`
reads those lines strictly and reports every deviation instead of guessing. Any OpenAI-compatible vision
chat endpoint works (GPT-4o, Gemini's OpenAI endpoint, vLLM); the paper uses temperature 0 and seed 42.

Example:
    >>> judge = VLMJudge(JudgeConfig(model="gpt-4o", api_key="sk-..."))  # doctest: +SKIP
    >>> result = judge.judge(persona_id="p1", persona_images=posts, prompt="a cup of coffee",
    ...                      method_images={"baseline": "b.png", "vprag": "v.png"})  # doctest: +SKIP
    >>> result.scores  # doctest: +SKIP
    {'baseline': 2.5, 'vprag': 4.0}
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Optional, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from vptt.core.errors import ConfigError
from vptt.core.providers import (
    RetryConfig,
    call_with_retry,
    chat_text,
    client_secrets,
    endpoint_label,
    openai_client,
)
from vptt.core.settings import default_request_timeout
from vptt.evaluators._canvas import (
    ImageInput,
    PostSelection,
    image_to_data_url,
    load_image,
    methods_canvas,
    profile_canvas,
    select_profile_posts,
)
from vptt.evaluators.calibration import JudgeCalibration

__all__ = [
    "SYSTEM_PROMPT", "CalibrationReport", "JudgeConfig", "JudgeRequest", "JudgeResult", "ParseProblem",
    "ParsedReply", "PostSelection", "ProblemKind", "VLMJudge", "assign_labels", "calibrate",
    "parse_judge_reply", "format_lines", "persona_seed", "select_profile_posts", "unshuffle", "user_prompt",
]

Task = Literal["generation", "editing"]
T = TypeVar("T")


# --------------------------------------------------------------------------- prompts (paper, supplement 15.1)
# Transcribed from the paper. The PDF text flattens line breaks and doubles bold markers
# ("****IMPORTANT**:**" is the bold rendering of "**IMPORTANT**:"); the format lines are one per label.

LABELS = "ABCDE"
_PLACEHOLDERS = ("X.X", "Y.Y", "Z.Z", "W.W", "V.V")
_EXPLANATION = "[1-2 sentence explanation of why this score, focusing on specific visual elements]"

SYSTEM_PROMPT = """\
You are an expert visual judge evaluating AI-generated images for visual similarity to a user's persona.
Evaluate how well each generated image captures the VISUAL ELEMENTS from the persona's posts.
EVALUATION CRITERIA (Visual Similarity):
1. **Objects & Materials:** Same objects, materials, textures visible in posts?
2. **Environment & Setting:** Similar locations, backgrounds, environments?
3. **Appearance Patterns:** Similar clothing styles, colors, expressions?
4. **Lighting & Atmosphere:** Similar lighting, mood, atmosphere?
5. **Colors & Composition:** Similar color palettes and visual composition?
6. **Cultural/Style Markers:** Similar cultural elements, aesthetic style?
SCORING (0-5 scale, use 0.5 increments):
- **5.0:** Excellent visual similarity - Captures most key visual elements from posts
- **4.0-4.5:** Good visual similarity - Several key visual elements present
- **3.0-3.5:** Moderate visual similarity - Some visual elements recognizable
- **2.0-2.5:** Weak visual similarity - Few visual elements match
- **1.0-1.5:** Minimal visual similarity - Barely any visual connection
- **0.0-0.5:** No visual similarity - Completely different visual style

**IMPORTANT**: Focus on VISUAL similarity, not just conceptual alignment."""

_GENERATION_PROMPT = """\
TASK: Evaluate these {n} generated images for visual similarity to the persona's posts
**GENERATION PROMPT:**
"{base_prompt}"
IMAGE 1 (Reference - Profile Context): Grid of selected posts from the persona's gallery (numbered).
IMAGE 2 (Generated Images to Evaluate): {n} generated images labeled A through {last} (left to right). \
Each was generated using a different approach (you don't know which approach was used for which image).
YOUR TASK: For EACH image ({label_list}), score 0-5 based on:
- How similar are the VISUAL ELEMENTS (objects, environment, appearance, lighting, colors)?
- Do the generated images look like they could belong to the same persona's gallery?
- Are there recognizable visual patterns from the posts?
Respond in this EXACT format (one line per image):
{format_lines}"""

_EDITING_PROMPT = """\
TASK: Evaluate these {n} edited images for visual similarity to the persona's posts

EDITING PROMPT: "{base_prompt}"

IMAGE 1 (Input Image): The original input image that was edited.

IMAGE 2 (Reference - Profile Context): Grid of selected posts from the persona's gallery (numbered).

IMAGE 3 (Edited Images to Evaluate): {n} edited images labeled A through {last} (left to right). \
Each was edited using a different approach (you don't know which approach was used for which image).

YOUR TASK: For EACH image ({label_list}), score 0-5 based on:

- How similar are the VISUAL ELEMENTS (objects, environment, appearance, lighting, colors)?

- Do the edited images look like they could belong to the same persona's gallery?

- Are there recognizable visual patterns from the posts?

Respond in this EXACT format (one line per image):
{format_lines}"""


def format_lines(labels: Sequence[str]) -> str:
    """The reply template, one ``A: Score=X.X - [...]`` line per label."""
    return "\n".join(f"{lab}: Score={ph} - {_EXPLANATION}" for lab, ph in zip(labels, _PLACEHOLDERS))


def user_prompt(task: Task, base_prompt: str, n_methods: int = 5) -> str:
    """The paper's user message for ``task`` with ``n_methods`` (2-5) images labelled A onwards.

    For 5 methods this is the paper's text word for word; fewer methods change only the count and labels.
    """
    if not 2 <= n_methods <= len(LABELS):
        raise ConfigError(f"the judge compares 2 to {len(LABELS)} methods; got {n_methods}")
    if task not in ("generation", "editing"):
        raise ConfigError(f"task must be 'generation' or 'editing', got {task!r}")
    labels = LABELS[:n_methods]
    template = _GENERATION_PROMPT if task == "generation" else _EDITING_PROMPT
    return template.format(n=n_methods, base_prompt=base_prompt, last=labels[-1],
                           label_list=", ".join(labels), format_lines=format_lines(labels))


# --------------------------------------------------------------------------- blind labels (shuffle)


def persona_seed(persona_id: str) -> int:
    """A stable 64-bit seed from ``persona_id``: the first 8 bytes of its SHA-256 (never ``hash()``)."""
    return int.from_bytes(hashlib.sha256(persona_id.encode("utf-8")).digest()[:8], "big")


def assign_labels(persona_id: str, methods: Sequence[str]) -> dict[str, str]:
    """Blind labels for one persona: ``{"A": method, "B": method, ...}`` in canvas order.

    The methods (2-5, in the given order) are shuffled by ``random.Random(persona_seed(persona_id))``,
    so the same persona always gets the same assignment and different personas get different ones.
    """
    names = list(methods)
    if not 2 <= len(names) <= len(LABELS):
        raise ConfigError(f"the judge compares 2 to {len(LABELS)} methods; got {len(names)}")
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ConfigError(f"method names must be unique and non-empty; got {names}")
    if not persona_id:
        raise ConfigError("persona_id must be a non-empty string (it seeds the label shuffle)")
    random.Random(persona_seed(persona_id)).shuffle(names)
    return dict(zip(LABELS, names))


def unshuffle(by_label: Mapping[str, T], labels: Mapping[str, str]) -> dict[str, T]:
    """Map values keyed by blind label back to method names, e.g. ``{"A": 4.0} -> {"vprag": 4.0}``."""
    unknown = sorted(set(by_label) - set(labels))
    if unknown:
        raise ConfigError(f"labels {unknown} are not in the assignment {sorted(labels)}")
    return {labels[label]: value for label, value in by_label.items()}


# --------------------------------------------------------------------------- strict reply parser


class ProblemKind(str, Enum):
    """What is wrong with a judge reply."""

    EMPTY_REPLY = "empty_reply"
    UNPARSEABLE_LINE = "unparseable_line"
    UNKNOWN_LABEL = "unknown_label"
    MISSING_LABEL = "missing_label"
    DUPLICATE_LABEL = "duplicate_label"
    OUT_OF_RANGE = "out_of_range"
    OFF_GRID = "off_grid"


class ParseProblem(BaseModel):
    """One deviation from the ``X: Score=S - reason`` format."""

    model_config = ConfigDict(frozen=True)

    kind: ProblemKind
    message: str
    label: Optional[str] = None
    line_no: Optional[int] = None
    line: Optional[str] = None


class ParsedReply(BaseModel):
    """Scores and reasons by blind label; a label with any problem has no score."""

    scores: dict[str, float] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict)
    problems: list[ParseProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the reply followed the format exactly."""
        return not self.problems


_LINE = re.compile(
    r"^(?P<label>[A-Z])\s*:\s*Score\s*=\s*(?P<score>[+-]?\d+(?:\.\d+)?)\s*[-\u2013\u2014]\s*(?P<reason>\S.*)$"
)
_EMBEDDED = re.compile(r"\b[A-Z]\s*:\s*Score\s*=")  # a second entry run into the same line


def _problem(kind: ProblemKind, message: str, label: str | None = None, line_no: int | None = None,
             line: str | None = None) -> ParseProblem:
    return ParseProblem(kind=kind, message=message, label=label, line_no=line_no, line=line)


def _check_line(line: str, line_no: int, labels: Sequence[str]) -> ParseProblem | tuple[str, float, str]:
    """Parse one non-blank line into ``(label, score, reason)`` or say what is wrong with it."""
    m = _LINE.match(line)
    if m is None or _EMBEDDED.search(m["reason"]):
        what = "is not" if m is None else "holds more than one"
        message = f"line {line_no} {what} 'X: Score=S - reason': {line[:80]!r}"
        return _problem(ProblemKind.UNPARSEABLE_LINE, message, None, line_no, line)
    label, score = m["label"], float(m["score"])
    if label not in labels:
        return _problem(ProblemKind.UNKNOWN_LABEL, f"line {line_no}: label {label} was not asked for",
                        label, line_no, line)
    if not 0.0 <= score <= 5.0:
        return _problem(ProblemKind.OUT_OF_RANGE, f"{label}: score {score} not in [0, 5]",
                        label, line_no, line)
    if abs(score * 2 - round(score * 2)) > 1e-9:
        return _problem(ProblemKind.OFF_GRID, f"{label}: score {score} not a 0.5 step", label, line_no, line)
    return label, score, m["reason"].strip()


def parse_judge_reply(reply: str | None, labels: Sequence[str]) -> ParsedReply:
    """Parse ``X: Score=S - reason`` lines, one per expected label, reporting every deviation.

    Blank lines are skipped; any other line that is not exactly one label's score line is reported.
    Scores must lie in [0, 5] on the 0.5 grid. A duplicated label keeps no score.

    Example:
        >>> r = parse_judge_reply("A: Score=4.5 - warm cafe light\\nB: Score=7 - x", ["A", "B"])
        >>> r.scores, [p.kind.value for p in r.problems]
        ({'A': 4.5}, ['out_of_range'])
    """
    if reply is None or not reply.strip():
        return ParsedReply(problems=[_problem(ProblemKind.EMPTY_REPLY, "the reply is empty")])
    problems: list[ParseProblem] = []
    seen: dict[str, int] = {}
    valid: dict[str, tuple[float, str]] = {}
    for line_no, raw in enumerate(reply.splitlines(), start=1):
        if not raw.strip():
            continue
        checked = _check_line(raw.strip(), line_no, labels)
        if isinstance(checked, ParseProblem):
            problems.append(checked)
            if checked.kind in (ProblemKind.OUT_OF_RANGE, ProblemKind.OFF_GRID):
                seen[checked.label or ""] = seen.get(checked.label or "", 0) + 1
            continue
        label, score, reason = checked
        seen[label] = seen.get(label, 0) + 1
        valid[label] = (score, reason)
    return _collect(labels, seen, valid, problems)


def _collect(labels: Sequence[str], seen: dict[str, int], valid: dict[str, tuple[float, str]],
             problems: list[ParseProblem]) -> ParsedReply:
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for label in labels:
        count = seen.get(label, 0)
        if count == 0:
            problems.append(_problem(ProblemKind.MISSING_LABEL, f"no line for {label}", label))
        elif count > 1:
            problems.append(_problem(ProblemKind.DUPLICATE_LABEL,
                                     f"{label} appears {count} times; none of its scores is kept", label))
        elif label in valid:
            scores[label], reasons[label] = valid[label]
    return ParsedReply(scores=scores, reasons=reasons, problems=problems)


# --------------------------------------------------------------------------- judge client


class JudgeConfig(BaseModel):
    """Settings of the VLM judge. ``api_key`` is a secret: never shown in repr, str or JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "gpt-4o"
    base_url: Optional[str] = None
    api_key: Optional[SecretStr] = Field(default=None, repr=False)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: Optional[int] = 42
    max_tokens: int = Field(default=5000, ge=1)
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    malformed_retries: int = Field(default=1, ge=0, le=5)
    timeout_s: float = Field(default_factory=lambda: default_request_timeout(120.0), gt=0)
    max_retries: int = Field(default=2, ge=0, le=19)
    image_format: Literal["png", "jpeg"] = "png"
    max_profile_images: int = Field(default=10, ge=1, le=10)
    profile_posts: PostSelection = "matched"
    profile_tile: int = Field(default=256, ge=16)
    method_tile: int = Field(default=384, ge=16)


@dataclass(frozen=True)
class JudgeRequest:
    """Everything sent for one persona: blind labels, the canvases and the chat messages."""

    persona_id: str
    task: Task
    labels: dict[str, str]
    profile_canvas: Image.Image = field(repr=False)
    methods_canvas: Image.Image = field(repr=False)
    input_image: Optional[Image.Image] = field(repr=False)
    messages: list[dict[str, Any]] = field(repr=False)  # holds megabytes of base64
    profile_posts: tuple[str, ...] = ()  # the posts on the profile canvas (ids, else positions), in order


class JudgeResult(BaseModel):
    """Per-method scores (un-shuffled), reasons, the raw reply and any parse problems."""

    persona_id: str
    task: Task
    model: str
    labels: dict[str, str]
    scores: dict[str, float]
    reasons: dict[str, str]
    raw_reply: str
    problems: list[ParseProblem]
    attempts: int
    replies: list[str]
    profile_posts: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the final reply parsed without any problem."""
        return not self.problems


class VLMJudge:
    """Scores generated images against a persona's posts with a vision chat model.

    Args:
        config: Judge settings; defaults to :class:`JudgeConfig` (GPT-4o, temperature 0, seed 42).
        client: A ready ``openai.OpenAI`` client (then ``api_key``/``base_url`` are not used).
        http_client: An ``httpx.Client`` passed to the ``openai.OpenAI`` client this class builds.
    """

    def __init__(self, config: JudgeConfig | None = None, *, client: Any = None,
                 http_client: Any = None) -> None:
        self.config = config if config is not None else JudgeConfig()
        self._client = client
        self._http_client = http_client

    def __repr__(self) -> str:
        return f"VLMJudge(model={self.config.model!r}, base_url={endpoint_label(self.config.base_url)!r})"

    @property
    def _what(self) -> str:
        return f"judge model {self.config.model!r} at {endpoint_label(self.config.base_url)}"

    @property
    def _secrets(self) -> list[str]:
        return client_secrets(self._client, self.config.api_key)

    def _get_client(self) -> Any:
        if self._client is None:
            cfg = self.config
            self._client = openai_client(api_key=cfg.api_key, base_url=cfg.base_url, timeout_s=cfg.timeout_s,
                                         http_client=self._http_client, purpose="the judge")
        return self._client

    def prepare(self, *, persona_id: str, persona_images: Sequence[ImageInput],
                method_images: Mapping[str, ImageInput], prompt: str, task: Task = "generation",
                input_image: ImageInput | None = None, post_ids: Sequence[str] | None = None,
                caption_embeddings: Any = None, prompt_embeddings: Any = None) -> JudgeRequest:
        """Validate inputs, shuffle labels and build the canvases and chat messages (no network).

        With more persona images than canvas places (``max_profile_images``), ``profile_posts="matched"``
        shows the posts whose captions are closest to the generated prompts
        (:func:`evaluators._canvas.select_profile_posts`): pass ``caption_embeddings`` (one row per persona
        image) and ``prompt_embeddings`` (one row per generated prompt). ``post_ids`` name the persona images
        in the result (default: their positions).
        """
        _check_inputs(persona_images, prompt, task, input_image)
        if post_ids is not None and len(post_ids) != len(persona_images):
            raise ConfigError(f"post_ids has {len(post_ids)} entries for {len(persona_images)} persona "
                              "images")
        labels = assign_labels(persona_id, list(method_images))
        cfg = self.config
        chosen = select_profile_posts(len(persona_images), max_images=cfg.max_profile_images,
                                      mode=cfg.profile_posts, caption_embs=caption_embeddings,
                                      prompt_embs=prompt_embeddings)
        shown_posts = tuple(str(post_ids[i]) if post_ids is not None else str(i) for i in chosen)
        profile = profile_canvas([persona_images[i] for i in chosen], max_images=cfg.max_profile_images,
                                 tile=cfg.profile_tile)
        shown = [method_images[m] for m in labels.values()]
        methods = methods_canvas(shown, list(labels), tile=cfg.method_tile)
        original = load_image(input_image) if input_image is not None else None
        images = ([original] if original is not None else []) + [profile, methods]
        content: list[dict[str, Any]] = [{"type": "text", "text": user_prompt(task, prompt, len(labels))}]
        content += [{"type": "image_url", "image_url": {"url": image_to_data_url(im, cfg.image_format)}}
                    for im in images]
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
        return JudgeRequest(persona_id, task, labels, profile, methods, original, messages, shown_posts)

    def judge(self, *, persona_id: str, persona_images: Sequence[ImageInput],
              method_images: Mapping[str, ImageInput], prompt: str, task: Task = "generation",
              input_image: ImageInput | None = None, post_ids: Sequence[str] | None = None,
              caption_embeddings: Any = None, prompt_embeddings: Any = None) -> JudgeResult:
        """Score each method's image 0-5 for visual similarity to the persona's posts (see ``prepare``)."""
        return self.run(self.prepare(persona_id=persona_id, persona_images=persona_images,
                                     method_images=method_images, prompt=prompt, task=task,
                                     input_image=input_image, post_ids=post_ids,
                                     caption_embeddings=caption_embeddings,
                                     prompt_embeddings=prompt_embeddings))

    def run(self, request: JudgeRequest) -> JudgeResult:
        """Send a prepared request; re-ask up to ``malformed_retries`` times while the reply is malformed."""
        labels = list(request.labels)
        messages = list(request.messages)
        replies: list[str] = []
        while True:
            reply = self._ask(messages)
            replies.append(reply)
            parsed = parse_judge_reply(reply, labels)
            if parsed.ok or len(replies) > self.config.malformed_retries:
                break
            messages = [*messages, {"role": "assistant", "content": reply},
                        {"role": "user", "content": _retry_text(parsed.problems, labels)}]
        return JudgeResult(persona_id=request.persona_id, task=request.task, model=self.config.model,
                           labels=request.labels, scores=unshuffle(parsed.scores, request.labels),
                           reasons=unshuffle(parsed.reasons, request.labels), raw_reply=reply,
                           problems=parsed.problems, attempts=len(replies), replies=replies,
                           profile_posts=list(request.profile_posts))

    def _ask(self, messages: list[dict[str, Any]]) -> str:
        cfg = self.config
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                                  "max_tokens": cfg.max_tokens}
        if cfg.seed is not None:
            kwargs["seed"] = cfg.seed
        if cfg.top_p is not None:
            kwargs["top_p"] = cfg.top_p
        client = self._get_client()
        response = call_with_retry(lambda: client.chat.completions.create(**kwargs), what=self._what,
                                   retry=RetryConfig(max_attempts=cfg.max_retries + 1), secrets=self._secrets)
        return chat_text(response, self._what, self._secrets)  # an echoed key never reaches a result


def _check_inputs(persona_images: Sequence[ImageInput], prompt: str, task: str,
                  input_image: ImageInput | None) -> None:
    if task not in ("generation", "editing"):
        raise ConfigError(f"task must be 'generation' or 'editing', got {task!r}")
    if not prompt or not prompt.strip():
        raise ConfigError("prompt is empty: pass the base generation/editing prompt the methods were given")
    if not persona_images:
        raise ConfigError("no persona images: pass at least one of the persona's post images")
    if task == "editing" and input_image is None:
        raise ConfigError("task='editing' needs input_image (the original image that was edited)")
    if task == "generation" and input_image is not None:
        raise ConfigError("input_image is only used for task='editing'; drop it or set task='editing'")


def _retry_text(problems: Sequence[ParseProblem], labels: Sequence[str]) -> str:
    listed = "\n".join(f"- {p.message}" for p in problems)
    return (f"Your reply could not be parsed:\n{listed}\nRespond again in this EXACT format "
            f"(one line per image), with nothing else:\n{format_lines(labels)}")


# --------------------------------------------------------------------------- calibration against humans


class CalibrationReport(BaseModel):
    """Agreement of judge scores with human scores over (item, method) pairs, and the fitted monotone map.

    ``calibration`` maps judge scores to human scores (isotonic regression on every pair given, None with
    fewer than two pairs); ``mae_before``/``mae_after`` are the mean absolute errors to the human scores
    before and after it, measured on the same pairs (in-sample). For an honest before/after, fit on a
    calibration subset and evaluate on the rest: :func:`evaluators.validation.validate` does that.
    """

    rho: float
    p_value: float
    n_pairs: int
    n_items: int
    skipped_pairs: int
    methods: list[str]
    judge_mean: dict[str, float]
    human_mean: dict[str, float]
    judge_win_pct: dict[str, float]
    human_win_pct: dict[str, float]
    mae_before: float = math.nan
    mae_after: float = math.nan
    calibration: Optional[JudgeCalibration] = None


def method_means(items: Sequence[Mapping[str, float]], methods: Sequence[str]) -> dict[str, float]:
    """Mean score per method over the items that scored it (NaN if none did)."""
    out = {}
    for m in methods:
        vals = [float(it[m]) for it in items if m in it and math.isfinite(it[m])]
        out[m] = sum(vals) / len(vals) if vals else math.nan
    return out


def win_pct(items: Sequence[Mapping[str, float]], methods: Sequence[str]) -> dict[str, float]:
    """Share of items (in %) where each method has the best score; a tie splits the win equally."""
    wins = dict.fromkeys(methods, 0.0)
    scored = 0
    for it in items:
        vals = {m: float(it[m]) for m in methods if m in it and math.isfinite(it[m])}
        if not vals:
            continue
        scored += 1
        best = max(vals.values())
        winners = [m for m, v in vals.items() if v == best]
        for m in winners:
            wins[m] += 1.0 / len(winners)
    return {m: (100.0 * w / scored if scored else math.nan) for m, w in wins.items()}


def calibrate(judge: Sequence[JudgeResult | Mapping[str, float]],
              human: Sequence[Mapping[str, float]]) -> CalibrationReport:
    """Spearman rho between judge and human scores, pooled over every (item, method) both scored, and a
    monotone map from judge to human scores fitted on those pairs.

    ``judge[i]`` and ``human[i]`` score the same item (persona/prompt) by method name. Also returns the
    per-method mean and Win% of each side, and the mean absolute error before and after the map.
    """
    from scipy.stats import spearmanr

    if len(judge) != len(human):
        raise ConfigError(f"judge has {len(judge)} items but human has {len(human)}; pass aligned lists")
    j_items = [dict(it.scores) if isinstance(it, JudgeResult) else dict(it) for it in judge]
    h_items = [dict(it) for it in human]
    methods = list(dict.fromkeys(m for it in (*j_items, *h_items) for m in it))
    xs, ys, skipped = [], [], 0
    for j, h in zip(j_items, h_items):
        for m in methods:
            if m in j and m in h and math.isfinite(j[m]) and math.isfinite(h[m]):
                xs.append(float(j[m]))
                ys.append(float(h[m]))
            elif m in j or m in h:
                skipped += 1
    rho, p = math.nan, math.nan
    cal, mae_before, mae_after = None, math.nan, math.nan
    if len(xs) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = spearmanr(xs, ys)
        rho, p = float(res.statistic), float(res.pvalue)
        cal = JudgeCalibration.fit(xs, ys)
        mae_before, mae_after = cal.fit_metrics["before"].mae, cal.fit_metrics["after"].mae
    return CalibrationReport(rho=rho, p_value=p, n_pairs=len(xs), n_items=len(j_items), skipped_pairs=skipped,
                             methods=methods, judge_mean=method_means(j_items, methods),
                             human_mean=method_means(h_items, methods),
                             judge_win_pct=win_pct(j_items, methods), human_win_pct=win_pct(h_items, methods),
                             mae_before=mae_before, mae_after=mae_after, calibration=cal)
