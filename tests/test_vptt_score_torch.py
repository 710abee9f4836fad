"""Differentiable VPTT terms: equal to the numpy hard forms, gradients reach the prompt, soft -> hard as
the temperature -> 0, and soft NV with one-hot trigram embeddings is exactly the hard NV."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vptt.core.errors import ConfigError
from vptt.evaluators import vptt_score as vs
from vptt.evaluators import vptt_score_torch as vt

D = 16
WORDS = ["the", "a", "red", "ceramic", "bowl", "kiln", "glaze", "at", "dawn", "kyoto", "don't", "tea"]


@pytest.fixture
def persona() -> tuple[np.ndarray, np.ndarray, vs.PersonaGeometry]:
    rng = np.random.default_rng(0)
    caps, card = rng.normal(size=(10, D)), rng.normal(size=D)
    return caps, card, vs.prepare_persona(card, caps)


def tensors(geo: vs.PersonaGeometry) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    return vt.persona_tensors(geo, dtype=torch.float64)


def test_hard_terms_equal_numpy(persona: tuple[np.ndarray, np.ndarray, vs.PersonaGeometry]) -> None:
    caps, card, geo = persona
    basis, card_t, cent = tensors(geo)
    v = np.random.default_rng(1).normal(size=(6, D)) * 2.5
    vt_ = torch.tensor(v)
    np.testing.assert_allclose(vt.persona_alignment(vt_, card_t).numpy(), vs.persona_alignment_batch(v, card),
                               atol=1e-12)
    np.testing.assert_allclose(vt.gs_reconstruction(vt_, basis).numpy(), vs.gs_reconstruction_batch(v, caps),
                               atol=1e-12)
    np.testing.assert_allclose(vt.cluster_proximity(vt_, basis, cent).numpy(),
                               vs.cluster_proximity_batch(v, caps), atol=1e-12)
    terms = vt.soft_vptt_score(vt_, card_t, basis, cent, nv=0.25, tau_cp=None)
    ref = vs.score_prepared(geo, ["x"] * 6, v, caption_conditioned=False)
    np.testing.assert_allclose(terms.score.numpy(),
                               ref.score - 0.2 * ref.nv + 0.2 * 0.25, atol=1e-12)
    np.testing.assert_allclose(terms.score_c.numpy(), ref.score_c, atol=1e-12)


def test_gradients_reach_the_prompt(persona: tuple[np.ndarray, np.ndarray, vs.PersonaGeometry]) -> None:
    _, _, geo = persona
    basis, card_t, cent = tensors(geo)
    v = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    vt.soft_vptt_score(v, card_t, basis, cent, nv=0.5).score.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    for fn in (lambda x: vt.persona_alignment(x, card_t), lambda x: vt.gs_reconstruction(x, basis),
               lambda x: vt.soft_cluster_proximity(x, basis, cent, 0.3)):
        assert torch.autograd.gradcheck(fn, (v.detach().clone().requires_grad_(),))


def test_gradient_is_finite_at_a_centroid_and_for_zero_card() -> None:
    basis, cent = torch.eye(D, dtype=torch.float64)[:, :1], torch.ones(1, 1, dtype=torch.float64)
    v = torch.eye(D, dtype=torch.float64)[0].clone().requires_grad_()  # B^T v = c_0 exactly: distance 0
    assert vt.cluster_distances(v, basis, cent).item() == 0.0
    out = vt.soft_cluster_proximity(v, basis, cent, 0.1) + vt.cluster_proximity(v, basis, cent)
    (out + vt.persona_alignment(v, torch.zeros(D, dtype=torch.float64))).backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
    assert vt.persona_alignment(v, None).item() == 0.0
    assert vt.persona_alignment(v, torch.full((D,), float("nan"))).item() == 0.0


def test_soft_cp_tends_to_hard_cp(persona: tuple[np.ndarray, np.ndarray, vs.PersonaGeometry]) -> None:
    _, _, geo = persona
    basis, _, cent = tensors(geo)
    v = torch.randn(8, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hard = vt.cluster_proximity(v, basis, cent)
    gaps = [(vt.soft_cluster_proximity(v, basis, cent, tau) - hard).abs().max().item()
            for tau in (1.0, 0.1, 0.01, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-9 and gaps[0] > 1e-3
    d = vt.cluster_distances(v, basis, cent)
    big = vt.soft_cluster_proximity(v, basis, cent, 1e6)
    torch.testing.assert_close(big, torch.exp(-d).mean(-1), atol=1e-6, rtol=0)  # tau -> inf: plain mean
    with pytest.raises(ConfigError):
        vt.soft_cluster_proximity(v, basis, cent, 0.0)


def random_texts(n: int, seed: int, lo: int = 0, hi: int = 14) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))).tolist()) for _ in range(n)]


class OneHot:
    """phi: one-hot vector per distinct trigram string (cosine 1 iff the same trigram)."""

    def __init__(self, texts: list[str]) -> None:
        vocab = sorted({t for x in texts for t in vt.trigram_strings(x)})
        self.index = {t: i for i, t in enumerate(vocab)}
        self.weight = torch.eye(max(1, len(vocab)), dtype=torch.float64, requires_grad=True)

    def __call__(self, tris: list[str]) -> torch.Tensor:
        return self.weight[[self.index[t] for t in tris]]


def test_soft_nv_with_one_hot_equals_hard_nv() -> None:
    caps = random_texts(5, 0, 3, 14)
    prompts = random_texts(60, 1)
    phi = OneHot(caps + prompts)
    for p in prompts:
        hard = vs.novelty(p, caps)
        assert vt.soft_novelty(p, caps, phi).item() == pytest.approx(hard, abs=1e-12)
        assert vt.soft_novelty(p, caps, phi, tau=1e-3).item() == pytest.approx(hard, abs=1e-6)


def test_soft_nv_smooth_max_tends_to_max() -> None:
    rng = np.random.default_rng(3)
    prompt = torch.tensor(rng.normal(size=(5, 8)))
    caps = [torch.tensor(rng.normal(size=(n, 8))) for n in (4, 0, 6)]
    hard = vt.soft_novelty_from_embeddings(prompt, caps)
    expect = 1 - max(float(torch.nn.functional.cosine_similarity(prompt[:, None], c[None], dim=-1)
                           .amax(1).sum() / 5) if len(c) else 0.0 for c in caps)
    assert hard.item() == pytest.approx(expect, abs=1e-12)
    gaps = [abs(vt.soft_novelty_from_embeddings(prompt, caps, tau).item() - hard.item())
            for tau in (1.0, 0.1, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-6


def test_soft_nv_gradients_and_edge_cases() -> None:
    caps = ["the red ceramic bowl at dawn", "tea"]
    phi = OneHot(caps + ["a red ceramic bowl at dusk"])
    nv = vt.soft_novelty("a red ceramic bowl at dusk", caps, phi, tau=0.5)
    nv.backward()
    assert phi.weight.grad is not None and phi.weight.grad.abs().sum() > 0
    p = torch.randn(4, 8, requires_grad=True)
    vt.soft_novelty_from_embeddings(p, [torch.randn(3, 8)]).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert vt.soft_novelty("two words", caps, phi).item() == 1.0  # no trigram -> 1
    assert vt.soft_novelty("the red ceramic", [], phi).item() == 1.0
    with pytest.raises(ConfigError):
        vt.soft_novelty("the red ceramic bowl", caps, lambda tris: np.zeros((len(tris) + 1, 3)))
    assert vt.trigram_strings("A b c a B C") == ["a b c", "b c a", "c a b"]
