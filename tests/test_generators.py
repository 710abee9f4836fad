"""Image generators: registry, tiny diffusers pipeline (t2i, i2i, from a directory), OpenAI images (respx)."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import respx
from PIL import Image

from tests.tiny_diffusion import save_tiny_pipeline, shared_pipeline, torch_threads
from vptt.agents.generators import GenerationRequest, ImageGenerator, build_generator
from vptt.core.errors import ConfigError, ModelLoadError, ProviderError
from vptt.core.providers import RateLimitedError, RetryConfig, RunTimeoutError

BASE = "http://testserver/v1"
KEY = "sk-IMG-SECRET-31337"
FAST = RetryConfig(max_attempts=3, initial_interval=0.0, jitter=False)


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def _png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def diffusers_gen():
    from vptt.agents.generators.diffusers_gen import DiffusersGenerator

    return DiffusersGenerator(shared_pipeline(), num_inference_steps=2, guidance_scale=2.0, height=32,
                              width=32)


def test_registry() -> None:
    assert build_generator(None) is None and build_generator("none") is None
    with pytest.raises(ConfigError, match="did you mean 'diffusers'"):
        build_generator("difusers")
    with pytest.raises(ConfigError, match="either|one or the other"):
        build_generator(build_generator("openai", api_key="k"), size="1x1")  # type: ignore[arg-type]


def test_text_to_image_matches_the_pipeline_and_is_seeded(diffusers_gen) -> None:
    import torch

    steps: list[tuple[int, int]] = []
    out = diffusers_gen.generate(GenerationRequest("a red bowl", seed=3,
                                                   on_progress=lambda s, n: steps.append((s, n))))
    assert out.image.size == (32, 32) and out.seed == 3 and steps == [(1, 2), (2, 2)]
    assert out.params["task"] == "generate" and out.params["num_inference_steps"] == 2
    ref = shared_pipeline()("a red bowl", num_inference_steps=2, guidance_scale=2.0, height=32, width=32,
                            generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(_pixels(out.image), _pixels(ref))  # same as calling diffusers directly
    again = diffusers_gen.generate(GenerationRequest("a red bowl", seed=3)).image
    other = diffusers_gen.generate(GenerationRequest("a red bowl", seed=4)).image
    assert np.array_equal(_pixels(again), _pixels(out.image))
    assert not np.array_equal(_pixels(other), _pixels(again))
    drawn = diffusers_gen.generate(GenerationRequest("a red bowl"))
    assert isinstance(drawn.seed, int)


def test_image_to_image_edit(diffusers_gen) -> None:
    init = Image.new("RGB", (32, 32), (200, 40, 40))
    out = diffusers_gen.generate(GenerationRequest("a blue bowl", seed=1, init_image=init, strength=0.9))
    assert out.image.size == (32, 32) and out.params["task"] == "edit" and out.params["strength"] == 0.9
    assert diffusers_gen._edit.unet is diffusers_gen._pipe.unet  # the edit pipeline shares the weights


def test_deadline_stops_generation(diffusers_gen) -> None:
    with pytest.raises(RunTimeoutError, match="step 1/2"):
        diffusers_gen.generate(GenerationRequest("a bowl", seed=1, deadline=time.monotonic() - 1))


def test_load_from_local_directory(tmp_path: Path, diffusers_gen) -> None:
    from vptt.agents.generators.diffusers_gen import DiffusersGenerator

    path = save_tiny_pipeline(tmp_path / "tiny-sd")
    gen = build_generator("diffusers", model=str(path), num_inference_steps=2, guidance_scale=2.0, height=32,
                          width=32)
    assert isinstance(gen, DiffusersGenerator) and gen._pipe is None  # loads lazily
    a = gen.generate(GenerationRequest("a red bowl", seed=5)).image
    b = diffusers_gen.generate(GenerationRequest("a red bowl", seed=5)).image
    assert np.array_equal(_pixels(a), _pixels(b))
    with pytest.raises(ModelLoadError, match="model_index.json"):
        DiffusersGenerator(str(tmp_path / "missing")).generate(GenerationRequest("x", seed=1))


def test_generator_without_edit_support_refuses_edits() -> None:
    class Solid(ImageGenerator):
        name = "solid"

        def _generate(self, request):
            return Image.new("RGB", (4, 4)), request.seed, {}

    with pytest.raises(ConfigError, match="cannot edit"):
        Solid().generate(GenerationRequest("x", init_image=Image.new("RGB", (4, 4))))
    with pytest.raises(ConfigError, match="empty"):
        Solid().generate(GenerationRequest("  "))


def _openai(**kw):
    return build_generator("openai", model="gpt-image-1", base_url=BASE, api_key=KEY, size="256x256",
                           retry=FAST, http_client=httpx.Client(), **kw)


def test_openai_generate_and_edit() -> None:
    seen: list[httpx.Request] = []

    def answer(color):
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            data = [{"b64_json": base64.b64encode(_png(color)).decode()}]
            return httpx.Response(200, json={"created": 0, "data": data})
        return handler

    with respx.mock(base_url=BASE) as mock:
        mock.post("/images/generations").mock(side_effect=answer((10, 20, 30)))
        mock.post("/images/edits").mock(side_effect=answer((40, 50, 60)))
        gen = _openai()
        out = gen.generate(GenerationRequest("a raku bowl", seed=9))
        edit = gen.generate(GenerationRequest("make it blue", init_image=Image.new("RGB", (8, 8), (1, 2, 3))))
    assert json.loads(seen[0].content) == {"model": "gpt-image-1", "prompt": "a raku bowl", "n": 1,
                                           "size": "256x256"}
    assert out.image.getpixel((0, 0)) == (10, 20, 30)
    assert out.seed is None and out.params["seed_supported"] is False
    body = seen[1].content
    assert b"multipart/form-data" in seen[1].headers["content-type"].encode() and b"make it blue" in body
    assert b"\x89PNG" in body and edit.image.getpixel((0, 0)) == (40, 50, 60)
    assert edit.params["task"] == "edit"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}" and KEY not in repr(gen)


def test_openai_url_answer_retry_and_typed_errors() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/images/generations").mock(side_effect=[
            httpx.Response(429, json={"error": {"message": "slow"}}, headers={"retry-after": "0"}),
            httpx.Response(200, json={"created": 0, "data": [{"url": "http://testserver/files/a.png"}]})])
        png = httpx.Response(200, content=_png((7, 7, 7)))
        mock.get("http://testserver/files/a.png").mock(return_value=png)
        out = _openai().generate(GenerationRequest("x"))
    assert route.call_count == 2 and out.image.getpixel((1, 1)) == (7, 7, 7)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/images/generations").mock(return_value=httpx.Response(500, json={"error": KEY}))
        with pytest.raises(ProviderError, match="HTTP 500 after 3") as info:
            _openai().generate(GenerationRequest("x"))
    assert route.call_count == 3 and KEY not in str(info.value)
    with respx.mock(base_url=BASE) as mock:
        mock.post("/images/generations").mock(return_value=httpx.Response(429, json={"error": "quota"}))
        with pytest.raises(RateLimitedError, match="quota"):
            _openai().generate(GenerationRequest("x"))
    with respx.mock(base_url=BASE) as mock:
        mock.post("/images/generations").mock(return_value=httpx.Response(200, json={"created": 0, "data": [
            {"b64_json": base64.b64encode(b"not an image").decode()}]}))
        with pytest.raises(ProviderError, match="not an image"):
            _openai().generate(GenerationRequest("x"))
