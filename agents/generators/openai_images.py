"""OpenAI images (``gpt-image-1``, DALL-E, or any compatible endpoint): generation and editing.

Requests go through the ``openai`` SDK with its own retries off; :mod:`agents._retry` retries 429/5xx and
timeouts with backoff and turns failures into typed :class:`~sdk.errors.ProviderError` subclasses. The
endpoint takes no seed, so results record ``seed=None`` and a retry simply asks again.

Example:
    >>> gen = OpenAIImageGenerator(model="gpt-image-1", size="1024x1024")        # doctest: +SKIP
    >>> gen.generate(GenerationRequest("a raku tea bowl on tatami")).image      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import threading
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from vptt.agents.generators.base import GenerationRequest, ImageGenerator
from vptt.core.errors import ProviderError, ProviderResponseError
from vptt.core.providers import RetryConfig, call_with_retry, client_secrets, endpoint_label, openai_client
from vptt.core.settings import default_request_timeout

if TYPE_CHECKING:
    import httpx


class OpenAIImagesConfig(BaseModel):
    """Settings of :class:`OpenAIImageGenerator`. ``api_key`` is hidden in repr, str and JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "gpt-image-1"
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, repr=False)
    size: str | None = "1024x1024"
    quality: str | None = None
    timeout_s: float = Field(default_factory=lambda: default_request_timeout(180.0), gt=0)
    retry: RetryConfig = Field(default_factory=RetryConfig)


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as exc:
        raise ProviderResponseError(f"{what}: the endpoint returned data that is not an image ({exc}); check "
                                    "the model name and base_url") from None
    return image


class OpenAIImageGenerator(ImageGenerator):
    """Image generation and editing through an OpenAI-compatible ``/images`` endpoint.

    Args:
        config: settings; keyword arguments override its fields (``model=``, ``api_key=``, ``size=`` ...).
        http_client: an ``httpx.Client`` for the SDK and for downloading URL answers (tests use respx).
        client: a ready ``openai.OpenAI`` client.
    """

    supports_edit = True

    def __init__(self, config: OpenAIImagesConfig | None = None, *, http_client: httpx.Client | None = None,
                 client: Any = None, **overrides: Any) -> None:
        self.config = OpenAIImagesConfig(**{**dict(config or OpenAIImagesConfig()), **overrides})
        self.name = f"openai:{self.config.model}"
        self._http = http_client
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIImageGenerator(model={self.config.model!r}, base_url={endpoint_label(self.config.base_url)!r})"

    @property
    def _secrets(self) -> list[str]:
        return client_secrets(self._client, self.config.api_key)

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = openai_client(api_key=self.config.api_key, base_url=self.config.base_url,
                                             timeout_s=self.config.timeout_s, http_client=self._http,
                                             purpose="OpenAI images")
            return self._client

    def _call(self, request: GenerationRequest) -> Any:
        c = self.config
        opts: dict[str, Any] = {"model": c.model, "prompt": request.prompt, "n": 1}
        if c.size:
            opts["size"] = c.size if request.width is None else \
                f"{request.width}x{request.height or request.width}"
        if c.quality:
            opts["quality"] = c.quality
        if c.model.startswith("dall-e"):
            opts["response_format"] = "b64_json"
        images = self._get_client().images
        if request.init_image is None:
            return images.generate(**opts)
        opts["image"] = ("image.png", _png_bytes(request.init_image), "image/png")
        if request.mask_image is not None:
            opts["mask"] = ("mask.png", _png_bytes(request.mask_image), "image/png")
        return images.edit(**opts)

    def _download(self, url: str, what: str) -> bytes:
        import httpx

        def get() -> bytes:
            client = self._http or httpx.Client(timeout=self.config.timeout_s)
            try:
                resp = client.get(url)
                resp.raise_for_status()
                return resp.content
            finally:
                if client is not self._http:
                    client.close()
        return call_with_retry(get, what=f"{what} (download)", retry=self.config.retry, secrets=self._secrets)

    def _generate(self, request: GenerationRequest) -> tuple[Image.Image, int | None, dict[str, Any]]:
        what = f"images model {self.config.model!r} ({request.task}) at {endpoint_label(self.config.base_url)}"
        resp = call_with_retry(lambda: self._call(request), what=what, retry=self.config.retry,
                               secrets=self._secrets)
        data = (getattr(resp, "data", None) or [None])[0]
        if data is None:
            raise ProviderError(f"{what}: the answer holds no image; check the model name and the prompt "
                                "(it may have been refused by moderation)")
        if getattr(data, "b64_json", None):
            try:
                raw = base64.b64decode(data.b64_json, validate=True)
            except (ValueError, TypeError):
                raise ProviderResponseError(f"{what}: malformed response (b64_json is not base64)") from None
        elif getattr(data, "url", None):
            raw = self._download(data.url, what)
        else:
            raise ProviderError(f"{what}: the answer has neither b64_json nor url")
        params = {"prompt": request.prompt, "model": self.config.model, "size": self.config.size,
                  "quality": self.config.quality, "revised_prompt": getattr(data, "revised_prompt", None),
                  "seed_supported": False}
        return _decode(raw, what), None, params
