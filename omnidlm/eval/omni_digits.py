"""Held-out evaluation of an omni digits model: questions answered, digits drawn and judged.

    q = question_accuracy(model, tok, limit=60)     # held-out images 1500-1796
    d = drawing_accuracy(model, tok, per_digit=3)   # judged by DigitJudge (SVC on real digits)
"""

from __future__ import annotations

import random
import time

import numpy as np

from ..data.digits import QUESTION, WORDS, caption, digit_images, question_answer
from ..sampling.image import FlowSettings, draw_lladao
from ..sampling.omni import understand
from .judge import DigitJudge


def heldout_subset(limit: int | None, seed: int = 0) -> list[int]:
    """Indices into the held-out split: all, or `limit` of them chosen at random (fixed seed)."""
    _, labels = digit_images("heldout", 8)
    idx = list(range(len(labels)))
    if limit is not None and limit < len(idx):
        idx = sorted(random.Random(seed).sample(idx, limit))
    return idx


def question_accuracy(model, tokenizer, limit: int | None = None, seed: int = 0, threshold: float = 0.95,
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


def drawing_accuracy(model, tokenizer, per_digit: int = 3, seed: int = 0, steps: int = 30, cfg: float = 4.0,
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


__all__ = ["question_accuracy", "drawing_accuracy", "sample_diversity", "heldout_subset", "QUESTION", "WORDS"]
