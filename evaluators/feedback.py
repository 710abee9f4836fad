"""The learnable feedback simulator ``f_theta`` of the VPTT paper (Sec. 3.3, 4.2.4, supplement 16), in torch.

``f_theta(Emb(p'), Emb(P))`` predicts the alignment score ``s in [0, 1]`` of a prompt for a persona.
Architecture (supplement 16): profile and prompt embeddings projected to 128-d; cross-attention with 4
heads; a feed-forward network 128 -> 256 -> 128 with residual connections and LayerNorm; a head
256 -> 128 -> 64 -> 1 with a sigmoid over ``concat(attended 128, prompt 128)``. Training: AdamW (lr 1e-3,
weight decay 0.05), MSE, dropout 0.2, early stopping on the validation MSE (patience 10, best weights
restored).

Choices the paper leaves open (see also :mod:`evaluators.feedback_data`):

* The profile is a token sequence (persona card + captions, zero-padded, masked) and the prompt one token
  (or the prompt and its clauses). ``query_side="profile"`` (default) is the paper's wording: profile tokens
  attend to the prompt token(s). ``"prompt"`` reverses it (prompt tokens pick the matching posts); it is
  ~1.4x faster and as accurate within seed noise (below).
* Attention sink (``attention_sink``): learned bias key/value tokens (``add_bias_kv``). For
  ``query_side="profile"`` with one prompt token the softmax would otherwise be over a single key, so every
  profile token would get the same prompt value whatever the match; with the sink each profile token takes
  the prompt's value in proportion to their match (a similarity gate). For ``"prompt"`` it lets a prompt
  that matches no post attend to "nothing".
* ``shared_projection``/``tied_qk_init``/``input_norm``: one 128-d projection for both sides (one embedder,
  one space), the key projection initialised equal to the query projection and a LayerNorm after the
  projection, so attention logits start out as a scaled similarity of profile and prompt. Without them the
  net memorises training personas instead of learning similarity.
* Attended tokens are averaged over the query side's real tokens (masked mean); the prompt half of the head
  input is the masked mean of the projected prompt tokens. Activations are GELU. Padding never changes a
  score (masked out of attention as keys, and of the means as queries).

Measured (``benchmarks/bench_feedback.py --quality --seeds 3``: MiniLM embeddings, 192 pseudo-personas cut
from the sample set, synthetic labels, 65/10/25 profile-level splits; test accuracy, mean +- sd over 3
training seeds; constant predictor 0.20): default 0.62 +- 0.06 (MAE 0.30, constant 0.40);
``query_side="prompt"`` 0.59 +- 0.10, and 0.61 +- 0.06 without the sink; paper-literal (no
sink/shared/tied/norm) 0.26 +- 0.08 (0.36 +- 0.12 with ``query_side="prompt"``).

Example:
    >>> import torch
    >>> m = FeedbackModel(FeedbackConfig(profile_dim=8, prompt_dim=8, hidden=16, heads=4, ffn=32,
    ...                                  head_hidden=(16, 8)))
    >>> m.predict(np.ones((2, 3, 8), np.float32), np.array([[1, 1, 0], [1, 0, 0]], bool),
    ...           np.ones((2, 1, 8), np.float32)).shape
    (2,)
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from vptt.core.errors import ConfigError, ModelLoadError
from vptt.evaluators.feedback_data import BIN_NAMES, FeedbackArrays, score_bins

FORMAT = "vptt-feedback"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class FeedbackConfig(BaseModel):
    """Architecture and training settings (paper defaults; small dims allowed for tests)."""

    model_config = ConfigDict(extra="forbid")

    profile_dim: int = Field(default=384, ge=1)
    prompt_dim: int = Field(default=384, ge=1)
    hidden: int = Field(default=128, ge=1)
    heads: int = Field(default=4, ge=1)
    ffn: int = Field(default=256, ge=1)
    head_hidden: tuple[int, ...] = (128, 64)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    query_side: Literal["prompt", "profile"] = "profile"
    attention_sink: bool = True
    shared_projection: bool = True
    tied_qk_init: bool = True
    input_norm: bool = True
    max_profile_tokens: int = Field(default=33, ge=1)
    max_prompt_tokens: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    batch_size: int = Field(default=64, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=10, ge=1)
    seed: int = 0
    embedder: str = ""

    @model_validator(mode="after")
    def _heads_divide(self) -> FeedbackConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.shared_projection and self.profile_dim != self.prompt_dim:
            raise ValueError(f"shared_projection needs profile_dim == prompt_dim (got {self.profile_dim} and "
                             f"{self.prompt_dim}); set shared_projection=False")
        return self


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, T, H)`` over the tokens where ``mask (B, T)`` is True."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class FeedbackNet(nn.Module):
    """Cross-attention regressor ``(profile tokens, prompt tokens) -> score in [0, 1]``."""

    def __init__(self, cfg: FeedbackConfig) -> None:
        super().__init__()
        h, p = cfg.hidden, cfg.dropout
        self.query_side = cfg.query_side
        self.profile_proj = nn.Linear(cfg.profile_dim, h)
        self.prompt_proj = None if cfg.shared_projection else nn.Linear(cfg.prompt_dim, h)
        self.attn = nn.MultiheadAttention(h, cfg.heads, dropout=p, batch_first=True,
                                          add_bias_kv=cfg.attention_sink)
        self.in_norm_profile = nn.LayerNorm(h) if cfg.input_norm else nn.Identity()
        self.in_norm_prompt = nn.LayerNorm(h) if cfg.input_norm else nn.Identity()
        if cfg.tied_qk_init:
            with torch.no_grad():
                self.attn.in_proj_weight[h:2 * h].copy_(self.attn.in_proj_weight[:h])
        self.norm1 = nn.LayerNorm(h)
        self.ffn = nn.Sequential(nn.Linear(h, cfg.ffn), nn.GELU(), nn.Dropout(p), nn.Linear(cfg.ffn, h))
        self.norm2 = nn.LayerNorm(h)
        self.drop = nn.Dropout(p)
        layers: list[nn.Module] = []
        width = 2 * h
        for w in cfg.head_hidden:
            layers += [nn.Linear(width, w), nn.GELU(), nn.Dropout(p)]
            width = w
        self.head = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, profile: torch.Tensor, profile_mask: torch.Tensor, prompt: torch.Tensor,
                prompt_mask: torch.Tensor, return_attention: bool = False) -> Any:
        """Scores ``(B,)``; with ``return_attention`` also head-averaged weights ``(B, Tq, Tk [+1 sink])``.

        Masks are bool, True = real token; each row needs at least one real token per side.
        """
        prompt_proj = self.prompt_proj if self.prompt_proj is not None else self.profile_proj
        pr = self.in_norm_profile(self.profile_proj(profile))
        pq = self.in_norm_prompt(prompt_proj(prompt))
        if self.query_side == "prompt":
            queries, q_mask, keys, k_mask = pq, prompt_mask, pr, profile_mask
        else:
            queries, q_mask, keys, k_mask = pr, profile_mask, pq, prompt_mask
        att, weights = self.attn(queries, keys, keys, key_padding_mask=~k_mask, need_weights=return_attention)
        x = self.norm1(queries + self.drop(att))
        x = self.norm2(x + self.drop(self.ffn(x)))
        z = torch.cat([masked_mean(x, q_mask), masked_mean(pq, prompt_mask)], dim=-1)
        score = torch.sigmoid(self.head(z)).squeeze(-1)
        return (score, weights) if return_attention else score


def build_net(cfg: FeedbackConfig) -> FeedbackNet:
    """A freshly initialised net, seeded by ``cfg.seed`` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return FeedbackNet(cfg)


def check_inputs(cfg: FeedbackConfig, profile: np.ndarray, profile_mask: np.ndarray, prompt: np.ndarray,
                 prompt_mask: np.ndarray) -> None:
    """Validate shapes and masks up front (each row needs at least one real token on both sides)."""
    if profile.ndim != 3 or profile.shape[2] != cfg.profile_dim:
        raise ConfigError(f"profile must be (B, T, {cfg.profile_dim}), got {profile.shape}; embed with the "
                          f"embedder the model was trained with ({cfg.embedder or 'see config.json'})")
    if prompt.ndim != 3 or prompt.shape[2] != cfg.prompt_dim or prompt.shape[0] != profile.shape[0]:
        raise ConfigError(f"prompt must be ({profile.shape[0]}, S, {cfg.prompt_dim}), got {prompt.shape}")
    if profile_mask.shape != profile.shape[:2] or prompt_mask.shape != prompt.shape[:2]:
        raise ConfigError(f"masks must be (B, T) and (B, S): got {profile_mask.shape} for profile "
                          f"{profile.shape[:2]} and {prompt_mask.shape} for prompt {prompt.shape[:2]}")
    if not (profile_mask.any(1).all() and prompt_mask.any(1).all()):
        raise ConfigError("every row needs at least one real (mask=True) profile token and prompt token")


class FeedbackModel:
    """Holds a :class:`FeedbackNet` and its config; predicts, saves and loads (safetensors + JSON)."""

    def __init__(self, config: FeedbackConfig | None = None, net: FeedbackNet | None = None) -> None:
        self.config = config or FeedbackConfig()
        self.net = (net if net is not None else build_net(self.config)).eval()
        self.meta: dict[str, Any] = {}

    def __repr__(self) -> str:
        c = self.config
        return (f"FeedbackModel(dims={c.profile_dim}/{c.prompt_dim}, hidden={c.hidden}, heads={c.heads}, "
                f"embedder={c.embedder!r})")

    @torch.inference_mode()
    def predict(self, profile: np.ndarray, profile_mask: np.ndarray, prompt: np.ndarray,
                prompt_mask: np.ndarray | None = None, batch_size: int = 1024) -> np.ndarray:
        """Scores ``(B,)`` for profile tokens ``(B, T, D)`` and prompt tokens ``(B, S, D)`` (True = real)."""
        profile, prompt = np.asarray(profile, np.float32), np.asarray(prompt, np.float32)
        profile_mask = np.asarray(profile_mask, bool)
        prompt_mask = (np.ones(prompt.shape[:2], bool) if prompt_mask is None
                       else np.asarray(prompt_mask, bool))
        check_inputs(self.config, profile, profile_mask, prompt, prompt_mask)
        self.net.eval()
        out = [self.net(*map(torch.from_numpy, (profile[i:i + batch_size], profile_mask[i:i + batch_size],
                                                 prompt[i:i + batch_size], prompt_mask[i:i + batch_size])))
               for i in range(0, len(profile), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def predict_arrays(self, arrays: FeedbackArrays) -> np.ndarray:
        """Scores of every example of featurized data."""
        idx = arrays.persona_index
        return self.predict(arrays.profile[idx], arrays.profile_mask[idx], arrays.prompt, arrays.prompt_mask)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with ``meta``) into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        save_file(state, str(d / WEIGHTS_FILE), metadata={"format": FORMAT})
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config.model_dump(mode="json"),
               "meta": self.meta}
        (d / CONFIG_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> FeedbackModel:
        """Load a model written by :meth:`save` (raises :class:`ModelLoadError` with the reason)."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
            raise ModelLoadError(f"{d} is not a feedback model: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                                 "(train one with `vptt feedback train`)")
        try:
            doc = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} v{doc.get('version')}, expected {FORMAT} "
                                 f"v{FORMAT_VERSION}")
            config = FeedbackConfig.model_validate(doc["config"])
            net = build_net(config)
            net.load_state_dict(load_file(str(d / WEIGHTS_FILE)), strict=True)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load the feedback model in {d}: {exc}") from exc
        model = cls(config, net)
        model.meta = dict(doc.get("meta") or {})
        return model


# --------------------------------------------------------------------------- metrics (pure numpy)
@dataclass(frozen=True)
class FeedbackMetrics:
    """Sec. 4.2.4 metrics: binned accuracy, MAE, accuracy on aligned, plus MSE and a confusion matrix.

    ``confusion[i][j]`` counts true bin ``i`` predicted as bin ``j`` (bins: misaligned, neutral, aligned).
    ``constant_*`` are those of a constant predictor at the mean target (the MSE-optimal constant).
    """

    n: int
    mse: float
    mae: float
    accuracy: float
    aligned_accuracy: float
    class_accuracy: dict[str, float]
    confusion: list[list[int]]
    constant_mse: float
    constant_mae: float
    constant_accuracy: float

    @property
    def beats_constant(self) -> bool:
        """True when the model beats the constant predictor both on MSE (its loss) and on binned accuracy."""
        return self.mse < self.constant_mse and self.accuracy > self.constant_accuracy


def feedback_metrics(pred: np.ndarray, target: np.ndarray) -> FeedbackMetrics:
    """Metrics of predicted vs true scores (accuracy over the three score bins)."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ConfigError(f"pred and target must be equal-length non-empty 1-d arrays, got {p.shape}, "
                          f"{t.shape}")
    bp, bt = score_bins(p), score_bins(t)
    conf = np.zeros((3, 3), np.int64)
    np.add.at(conf, (bt, bp), 1)
    per = {BIN_NAMES[i]: float(conf[i, i] / conf[i].sum()) if conf[i].sum() else math.nan for i in range(3)}
    const = np.full_like(t, t.mean())
    return FeedbackMetrics(
        n=int(t.size), mse=float(((p - t) ** 2).mean()), mae=float(np.abs(p - t).mean()),
        accuracy=float((bp == bt).mean()), aligned_accuracy=per["aligned"], class_accuracy=per,
        confusion=conf.tolist(), constant_mse=float(((const - t) ** 2).mean()),
        constant_mae=float(np.abs(const - t).mean()),
        constant_accuracy=float((score_bins(const) == bt).mean()))


def val_test_gap(val: FeedbackMetrics, test: FeedbackMetrics) -> float:
    """Validation minus test accuracy (the paper reports 0.7 %)."""
    return val.accuracy - test.accuracy


def evaluate(model: FeedbackModel, arrays: FeedbackArrays) -> FeedbackMetrics:
    """Metrics of ``model`` on featurized data."""
    if len(arrays) == 0:
        raise ConfigError("no examples to evaluate (is this split empty?)")
    return feedback_metrics(model.predict_arrays(arrays), arrays.scores)


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean train MSE (dropout on), validation MSE and MAE (eval mode), wall seconds."""

    epoch: int
    train_loss: float
    val_loss: float
    val_mae: float
    seconds: float


@dataclass
class TrainResult:
    """The trained model (best validation weights) and the run's history."""

    model: FeedbackModel
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([h.seconds for h in self.history])) if self.history else math.nan


def _tensors(a: FeedbackArrays, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    idx = a.persona_index[rows]
    return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in
                 (a.profile[idx], a.profile_mask[idx], a.prompt[rows], a.prompt_mask[rows], a.scores[rows]))


def _check_arrays(cfg: FeedbackConfig, a: FeedbackArrays, name: str) -> None:
    if len(a) == 0:
        raise ConfigError(f"the {name} split is empty; use more personas or other split fractions")
    if a.profile.shape[2] != cfg.profile_dim or a.prompt.shape[2] != cfg.prompt_dim:
        raise ConfigError(f"{name} embeddings are {a.profile.shape[2]}/{a.prompt.shape[2]}-d but the config "
                          f"says {cfg.profile_dim}/{cfg.prompt_dim}; set profile_dim/prompt_dim to match")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)`` (restored after); ``None`` leaves the setting alone.

    A model this small trains fastest on one thread, far faster on a busy shared CPU.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_feedback(train: FeedbackArrays, val: FeedbackArrays, config: FeedbackConfig | None = None,
                   on_epoch: Callable[[EpochStats], None] | None = None, threads: int | None = None
                   ) -> TrainResult:
    """Train with AdamW + MSE, early stopping on validation MSE; returns the best-epoch weights.

    Args:
        train, val: featurized splits (:func:`evaluators.feedback_data.split_arrays`).
        config: settings; default: the paper's, with dims and embedder taken from ``train``.
        on_epoch: called after every epoch (progress display).
        threads: torch CPU threads while training (None: unchanged).
    """
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if config is not None else 0)  # dropout: reproducible runs
        return _train(train, val, config, on_epoch)


def _run_epoch(net: FeedbackNet, opt: torch.optim.Optimizer, train: FeedbackArrays, batch_size: int,
               gen: torch.Generator) -> float:
    """One pass over ``train`` in a seeded random order; returns the mean training MSE."""
    net.train()
    order = torch.randperm(len(train), generator=gen).numpy()
    total = 0.0
    for start in range(0, len(order), batch_size):
        *inputs, y = _tensors(train, order[start:start + batch_size])
        loss = nn.functional.mse_loss(net(*inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(y)
    return total / len(train)


def _validate(net: FeedbackNet, val: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """Validation (MSE, MAE) in eval mode."""
    net.eval()
    with torch.inference_mode():
        err = net(*val[:4]) - val[4]
    return float((err ** 2).mean()), float(err.abs().mean())


def _train(train: FeedbackArrays, val: FeedbackArrays, config: FeedbackConfig | None,
           on_epoch: Callable[[EpochStats], None] | None) -> TrainResult:
    cfg = config or FeedbackConfig(profile_dim=train.profile.shape[2], prompt_dim=train.prompt.shape[2],
                                   embedder=train.embedder)
    _check_arrays(cfg, train, "train")
    _check_arrays(cfg, val, "validation")
    result = TrainResult(FeedbackModel(cfg))
    net = result.model.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    val_t = _tensors(val, np.arange(len(val)))
    best_state, bad, t_start = copy.deepcopy(net.state_dict()), 0, time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.perf_counter()
        train_loss = _run_epoch(net, opt, train, cfg.batch_size, gen)
        val_loss, val_mae = _validate(net, val_t)
        result.history.append(EpochStats(epoch, train_loss, val_loss, val_mae, time.perf_counter() - t0))
        if on_epoch is not None:
            on_epoch(result.history[-1])
        if val_loss < result.best_val_loss - 1e-7:
            result.best_val_loss, result.best_epoch, bad = val_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                result.stopped_early = True
                break
    net.load_state_dict(best_state)
    net.eval()
    result.seconds = time.perf_counter() - t_start
    return result
