"""Face attributes: the stable seed, determinism, uniform and independent draws (chi-square), render prompts
and rendering through a fake generator and through an ``ImageGenerator`` subclass."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats

from vptt.agents.generators.base import ImageGenerator
from vptt.agents.persona_gen.faces import (
    FACE_ATTRIBUTES,
    NO_PEOPLE_NEGATIVE,
    combinations,
    face_attributes,
    face_seed,
    neutralize_pronouns,
    portrait_prompt,
    post_prompt,
    render_persona,
)
from vptt.agents.persona_gen.procedural import procedural_persona

N_IDS = 5000


def _reference_seed(user_id: str, age: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{user_id}|{age // 10}".encode()).digest()[:8], "big") % 2**32


@pytest.fixture(scope="module")
def faces() -> list:
    return [face_attributes(f"user_{i}", 20 + i % 50) for i in range(N_IDS)]


def test_seed_is_the_stable_hash() -> None:
    for uid, age in (("p01", 34), ("user_9", 71), ("ünï", 0)):
        assert face_seed(uid, age) == _reference_seed(uid, age)
    assert face_seed("p01", 30) == face_seed("p01", 39) != face_seed("p01", 40)
    assert 0 <= face_seed("x", None) < 2**32


def test_attributes_are_deterministic_and_complete() -> None:
    a, b = face_attributes("p01", 34), face_attributes("p01", 37)
    assert a == b and a.seed == face_seed("p01", 34)
    assert len(FACE_ATTRIBUTES) == 10 and all(4 <= len(o) <= 6 for o in FACE_ATTRIBUTES.values())
    assert set(a.attributes) == set(FACE_ATTRIBUTES)
    assert all(a.attributes[k] in FACE_ATTRIBUTES[k] for k in FACE_ATTRIBUTES)
    assert combinations() == 8_640_000
    assert face_attributes("p01", 64).age_detail in ("wisdom lines", "silver hair")


@pytest.mark.parametrize("name", list(FACE_ATTRIBUTES))
def test_each_attribute_is_uniform(faces: list, name: str) -> None:
    options = FACE_ATTRIBUTES[name]
    counts = Counter(f.attributes[name] for f in faces)
    observed = [counts[o] for o in options]
    assert sum(observed) == N_IDS
    for o in observed:  # within 3 percentage points of 1/k
        assert abs(o / N_IDS - 1 / len(options)) < 0.03
    assert stats.chisquare(observed).pvalue > 1e-3


@pytest.mark.parametrize("a,b", [("face_shape", "eye_shape"), ("nose_type", "lip_shape"),
                                 ("jawline", "chin_shape")])
def test_attribute_pairs_are_independent(faces: list, a: str, b: str) -> None:
    pairs = Counter((f.attributes[a], f.attributes[b]) for f in faces)
    table = [[pairs[(x, y)] for y in FACE_ATTRIBUTES[b]] for x in FACE_ATTRIBUTES[a]]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_distinct_faces_are_diverse(faces: list) -> None:
    combos = {tuple(sorted(f.attributes.items())) for f in faces}
    assert len(combos) > 0.99 * N_IDS  # 8.6M combinations -> collisions are rare


def test_portrait_prompt_follows_the_paper() -> None:
    p = procedural_persona(4)
    d, face = p.demographics, face_attributes(p.persona_id, p.demographics.age)
    rp = portrait_prompt(p)
    assert rp.prompt.startswith("photo of a person")
    for part in (d.ethnicity, f"{d.age} years old", f"works as {d.occupation}", f"from {d.city}, {d.country}",
                 f"{face.attributes['face_shape']} face shape", f"{face.attributes['cheekbones']} cheekbones",
                 f"{face.expression} expression", "natural lighting"):
        assert part in rp.prompt
    assert (rp.width, rp.height, rp.seed, rp.negative_prompt) == (1344, 768, face.seed, None)
    assert rp.params["steps"] == 50 and rp.params["cfg"] == 0.0
    unknown = p.model_copy(update={"demographics": d.model_copy(update={"gender": "unknown"})})
    assert "unknown" not in portrait_prompt(unknown).prompt


def test_post_prompts_and_pronouns() -> None:
    assert neutralize_pronouns("She lifts her bowl; he smiles at him.") == \
        "This person lifts this person's bowl; this person smiles at this person."
    p = procedural_persona(1)
    appreciation = next(x for x in p.posts if x.type == "appreciation")
    activity = next(x for x in p.posts if x.type == "activity")
    ra, rb = post_prompt(p, appreciation), post_prompt(p, activity)
    assert ra.negative_prompt == NO_PEOPLE_NEGATIVE and "wearing" not in ra.prompt
    assert rb.negative_prompt is None and f"wearing {activity.elements['appearance'][0]}" in rb.prompt
    assert rb.params["steps"] == 40 and rb.params["cfg"] == 4.0
    assert post_prompt(p, activity, mode="lightning").params["cfg"] == 4.5
    assert rb.seed == post_prompt(p, activity).seed != ra.seed


class FakeGenerator:
    """Any object with ``generate(prompt, *, seed, init_image)``; records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, object]] = []

    def generate(self, prompt: str, *, seed: int, init_image: Image.Image | None = None):
        self.calls.append((prompt, seed, init_image))
        if "FAIL" in prompt:
            raise RuntimeError("boom")
        image = Image.new("RGB", (8, 8), (seed % 255, 0, 0))
        return type("G", (), {"image": image, "seed": seed, "params": {}})()


def test_render_with_a_fake_generator(tmp_path: Path) -> None:
    p = procedural_persona(2, n_posts=6)
    posts = list(p.posts)
    posts[3] = posts[3].model_copy(update={"caption": "FAIL " + posts[3].caption})
    p = p.model_copy(update={"posts": posts})
    gen = FakeGenerator()
    res = render_persona(p, gen, tmp_path, max_posts=5)
    assert Path(res.portrait).is_file() and gen.calls[0][2] is None
    assert gen.calls[0][1] == face_attributes(p.persona_id, p.demographics.age).seed
    assert all(isinstance(c[2], Image.Image) for c in gen.calls[1:])  # posts are edits of the portrait
    assert len(gen.calls) == 6 and set(res.failures) == {posts[3].post_id}
    assert [x.image is not None for x in res.persona.posts] == [True, True, True, False, True, False]
    assert all(Path(x.image).is_file() for x in res.persona.posts if x.image)
    assert res.persona.extra["portrait"] == res.portrait


class RequestGenerator(ImageGenerator):
    name, supports_edit = "req", False

    def __init__(self) -> None:
        self.requests: list = []

    def _generate(self, request):
        self.requests.append(request)
        return Image.new("RGB", (4, 4)), request.seed, {}


def test_render_with_an_image_generator(tmp_path: Path) -> None:
    p = procedural_persona(5, n_posts=4)
    gen = RequestGenerator()
    res = render_persona(p, gen, tmp_path)
    assert not res.failures and len(gen.requests) == 5
    assert (gen.requests[0].width, gen.requests[0].height) == (1344, 768)
    assert all(r.init_image is None for r in gen.requests)  # cannot edit -> text-to-image
    neg = {r.negative_prompt for r, post in zip(gen.requests[1:], p.posts) if post.type == "appreciation"}
    assert neg == {NO_PEOPLE_NEGATIVE}
