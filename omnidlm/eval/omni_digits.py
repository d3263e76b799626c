"""Held-out evaluation of an omni digits model: questions answered, digits drawn and judged.

    q = question_accuracy(model, tok, limit=60)     # held-out images 1500-1796
    d = drawing_accuracy(model, tok, per_digit=3)   # judged by DigitJudge (SVC on real digits)
    r = recompute_comparison(model, tok, limit=40)  # cached block-threshold vs LLaDA-V-style recompute
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from ..data.digits import QUESTION, WORDS, caption, digit_images, question_answer
from ..data.omni_batches import PromptCodec
from ..sampling.image import FlowSettings, draw_lladao
from ..sampling import omni as O
from ..sampling.engine import SamplingConfig
from ..sampling.omni import understand
from ..sampling.policies import FixedSteps
from ..systems.lladao import CFG, DRAW_STEPS, THRESHOLD
from .judge import DigitJudge


def heldout_subset(limit: int | None, seed: int = 0) -> list[int]:
    """Indices into the held-out split: all, or `limit` of them chosen at random (fixed seed)."""
    _, labels = digit_images("heldout", 8)
    idx = list(range(len(labels)))
    if limit is not None and limit < len(idx):
        idx = sorted(random.Random(seed).sample(idx, limit))
    return idx


def question_accuracy(model, tokenizer, limit: int | None = None, seed: int = 0, threshold: float = THRESHOLD,
                      kinds=("word",), progress=None) -> dict:
    """"What digit is shown?" (and other kinds) on held-out digits -> accuracy, length error, timing."""
    images, labels = digit_images("heldout", 32)
    rng = random.Random(seed)
    rows, correct, length_err, seconds = [], 0, [], []
    for n, i in enumerate(heldout_subset(limit, seed)):
        for kind in kinds:
            q, want = question_answer(int(labels[i]), kind, rng)
            ans = understand(model, tokenizer, images[i], q, threshold=threshold)
            ok = ans.text.strip() == want
            correct += ok
            length_err.append(abs(len(ans.ids) - len(tokenizer.encode(want))))
            seconds.append(ans.seconds)
            rows.append({"index": 1500 + i, "kind": kind, "answer": ans.text, "want": want, "ok": bool(ok)})
        if progress:
            progress(n)
    total = len(rows)
    return {"accuracy": correct / max(1, total), "n": total, "length_error": float(np.mean(length_err)),
            "seconds_per_answer": float(np.mean(seconds)), "rows": rows}


def drawing_accuracy(model, tokenizer, per_digit: int = 3, seed: int = 0, steps: int = DRAW_STEPS, cfg: float = CFG,
                     progress: bool = False) -> dict:
    """Draw `per_digit` images of every digit from "a handwritten digit N"; judge them with the SVC."""
    start = time.time()
    prompts = [caption(d) for d in range(10)]
    images = draw_lladao(model, tokenizer, prompts, n=per_digit, seed=seed,
                         settings=FlowSettings.euler(steps, cfg_text_scale=cfg), progress=progress)
    labels = np.repeat(np.arange(10), per_digit)
    predicted = DigitJudge.fit().predict(images)
    seconds = time.time() - start
    return {"accuracy": float((predicted == labels).mean()), "n": len(labels), "images": images,
            "labels": labels, "predicted": predicted, "seconds_per_image": seconds / len(labels)}


def _mean_pairwise(images: np.ndarray) -> float:
    """Mean RMS pixel distance over all pairs of (n, H, W) images (n >= 2)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    d2 = ((flat[:, None] - flat[None]) ** 2).mean(-1)  # (n, n)
    return float(np.sqrt(d2[np.triu_indices(len(flat), 1)]).mean())


def sample_diversity(images: np.ndarray, labels) -> dict | None:
    """How different the drawings of one digit are: the mean pairwise RMS pixel distance among the
    drawings of each digit, averaged over digits, beside the same for the real held-out digits at the
    drawings' size (a model that draws one image per digit scores 0; real handwriting sets the scale).
    None when no digit has two drawings."""
    labels = np.asarray(labels)
    real, real_labels = digit_images("heldout", images.shape[-1])
    digits = [d for d in range(10) if (labels == d).sum() >= 2]
    if not digits:
        return None
    drawn = float(np.mean([_mean_pairwise(images[labels == d]) for d in digits]))
    truth = float(np.mean([_mean_pairwise(real[real_labels == d]) for d in digits]))
    return {"drawn": drawn, "real": truth, "ratio": drawn / truth}


# --- LLaDA-o's cached block-threshold answers against LLaDA-V's sampler on the same model ------------

RECOMPUTE_KINDS = ("describe", "arithmetic")  # the long answers (about 40-55 tokens, two blocks)


def recompute_config(model, gen_length: int = 64) -> SamplingConfig:
    """LLaDA-V's sampler (docs/published/llada-v.md: LLaDA's sampler, fixed steps, no cache) on the
    digits model: every step recomputes [prefix | the whole gen_length canvas], one token per step,
    the canvas one block (LLaDA-V's default block = gen_length: the answer sees itself fully, as the
    digits model was trained), no stop at EOS. The attention is the engine's "block" layout only so
    that the prefix keeps the causal text mask the model was trained with: "full" would let the
    question see the answer canvas, which this model never saw (it then answers nothing right)."""
    return SamplingConfig(max_new_tokens=gen_length, block_length=gen_length, attention="block", cache="none",
                          policy=FixedSteps(gen_length), stop_at_eos=False,
                          ban_ids=O.understanding_config(model).ban_ids)  # the shipped sampler's bans


@torch.no_grad()
def _answered(model, tokenizer, asked, config: SamplingConfig, max_batch: int) -> dict:
    """Run (image, question, want) through one engine -> accuracy, seconds per answer, forwards."""
    codec, eos = PromptCodec(tokenizer), model.config.llm.eos_id
    start = time.time()  # end to end: the ViT and the prefix embeddings too
    requests = O.understanding_requests(model, tokenizer, [im for im, _, _ in asked], [q for _, q, _ in asked],
                                        max_new_tokens=config.max_new_tokens)
    results = O.understanding_engine(model, config, max_batch).run(requests)
    seconds = time.time() - start
    ok = [codec.decode(r.tokens[: r.tokens.index(eos)] if eos in r.tokens else r.tokens).strip() == want
          for r, (_, _, want) in zip(results, asked)]
    return {"accuracy": float(np.mean(ok)), "seconds_per_answer": seconds / len(asked),
            "forwards_per_answer": float(np.mean([r.forwards for r in results]))}


def recompute_comparison(model, tokenizer, limit: int | None = 40, seed: int = 0, repeats: int = 2,
                         gen_length: int = 64, kinds=RECOMPUTE_KINDS, max_batch: int = 16) -> dict:
    """The LLaDA-o paper's claim (docs/published/lladao.md: up to 5.9x faster than LLaDA-V at
    similar accuracy) on this model: the shipped understanding sampler (prefix prefilled once into
    the cache, blocks of 32, threshold 0.95, stop at EOS) against `recompute_config`, the same
    held-out questions, the same engine batch size. The two run alternately `repeats` times; each
    keeps its best time (machines are noisy); greedy answers are the same at every repeat."""
    images, labels = digit_images("heldout", 32)
    rng = random.Random(seed)
    asked = [(images[i], *question_answer(int(labels[i]), kind, rng))
             for i in heldout_subset(limit, seed) for kind in kinds]
    configs = {"cached": O.understanding_config(model), "recompute": recompute_config(model, gen_length)}
    best = {}
    for _ in range(repeats):
        for name, cfg in configs.items():
            r = _answered(model, tokenizer, asked, cfg, max_batch)
            if name not in best or r["seconds_per_answer"] < best[name]["seconds_per_answer"]:
                best[name] = r
    cached, recompute = best["cached"], best["recompute"]
    return {"cached": cached, "recompute": recompute, "n": len(asked), "kinds": list(kinds),
            "gen_length": gen_length, "repeats": repeats,
            "speedup": recompute["seconds_per_answer"] / max(cached["seconds_per_answer"], 1e-9),
            "accuracy_change": cached["accuracy"] - recompute["accuracy"]}


__all__ = ["question_accuracy", "drawing_accuracy", "sample_diversity", "heldout_subset", "recompute_comparison",
           "recompute_config", "QUESTION", "WORDS"]
