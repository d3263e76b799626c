"""How well a LLaDA2.0-Uni digits model reads, draws and edits held-out digits (for demo and bench).

    question_accuracy(model, tok)            "What digit is shown?" on held-out digits 1500-1796
    drawing_accuracy(model, tok)             "a handwritten digit N" drawn, judged by the SVC
    edit_accuracy(model, tok)                "Change the digit to N." on held-out digits, judged
    sprint_comparison(model, tok)            long answers (64+ tokens) with and without SPRINT
"""

from __future__ import annotations

import random
import time

import numpy as np

from ..data.digits import QUESTION, caption, digit_images, question_answer
from ..data.uni_batches import DETAIL, detailed_answer, edit_instruction
from ..sampling import uni as U
from ..sampling.image import draw_uni, edit_uni
from .judge import DigitJudge
from .omni_digits import heldout_subset


def question_accuracy(model, tokenizer, limit: int | None = None, seed: int = 0, kinds=("word",),
                      config=None) -> dict:
    """Answers to held-out questions -> accuracy, answer-length error, seconds per answer, rows."""
    images, labels = digit_images("heldout", 32)
    rng, asked = random.Random(seed), []
    for i in heldout_subset(limit, seed):
        for kind in kinds:
            q, want = (DETAIL, detailed_answer(int(labels[i]))) if kind == "detail" else \
                question_answer(int(labels[i]), kind, rng)
            asked.append((i, kind, q, want))
    answers = U.understand_many(model, tokenizer, [images[i] for i, *_ in asked], [q for *_, q, _ in asked], config)
    rows = [{"index": 1500 + i, "kind": kind, "answer": a.text, "want": want, "ok": a.text.strip() == want}
            for (i, kind, _, want), a in zip(asked, answers)]
    length_error = [abs(len(a.ids) - len(tokenizer.encode(want))) for (*_, want), a in zip(asked, answers)]
    generated = sum(len(a.ids) for a in answers)
    seconds = sum(a.seconds for a in answers)
    return {"accuracy": float(np.mean([r["ok"] for r in rows])), "n": len(rows),
            "length_error": float(np.mean(length_error)), "seconds_per_answer": seconds / max(1, len(rows)),
            "tokens_per_s": generated / max(seconds, 1e-9), "rows": rows}


def drawing_accuracy(model, tokenizer, per_digit: int = 3, seed: int = 0, distilled: bool = True,
                     decoder_steps: int | None = None, cfg: float = 3.0) -> dict:
    start = time.time()
    images = draw_uni(model, tokenizer, [caption(d) for d in range(10)], n=per_digit, seed=seed, cfg=cfg,
                    distilled=distilled, decoder_steps=decoder_steps)
    labels = np.repeat(np.arange(10), per_digit)
    predicted = DigitJudge.fit().predict(images)
    return {"accuracy": float((predicted == labels).mean()), "n": len(labels), "images": images, "labels": labels,
            "predicted": predicted, "seconds_per_image": (time.time() - start) / len(labels),
            "decoder_steps": decoder_steps or (8 if distilled else 30)}


def edit_accuracy(model, tokenizer, limit: int = 20, seed: int = 0) -> dict:
    """Each held-out digit changed into another digit (chosen at random); the result is judged."""
    images, labels = digit_images("heldout", 32)
    rng, wanted, drawn = random.Random(seed), [], []
    start = time.time()
    for i in heldout_subset(limit, seed):
        target = rng.choice([d for d in range(10) if d != int(labels[i])])
        drawn.append(edit_uni(model, tokenizer, images[i], edit_instruction(target), seed=seed)[0])
        wanted.append(target)
    predicted = DigitJudge.fit().predict(np.stack(drawn))
    return {"accuracy": float((predicted == np.array(wanted)).mean()), "n": len(wanted),
            "seconds_per_edit": (time.time() - start) / len(wanted)}


# SPRINT for the digits: its non-uniform unmasking, no pruning. On these prompts (about 60 tokens,
# every one needed) pruning even 5% of the text prefix breaks most long answers (docs/benchmarks.md).
DIGITS_SPRINT = dict(keep_text=1.0, keep_image=1.0, threshold=0.7, min_accept=8)


def sprint_comparison(model, tokenizer, limit: int = 40, seed: int = 0, sprint=None, repeats: int = 2) -> dict:
    """'Describe the image in detail.' (answers of 64+ tokens) with and without SPRINT, same engine.

    The two settings run alternately `repeats` times; each keeps its best tokens/s (machines are noisy).
    """
    from ..sampling.sprint import Sprint

    sprint = sprint or Sprint(**DIGITS_SPRINT)
    configs = {"without": U.sampling_config(), "with": U.sampling_config(sprint=sprint)}
    best = {}
    for _ in range(repeats):
        for name, cfg in configs.items():
            q = question_accuracy(model, tokenizer, limit, seed, kinds=("detail",), config=cfg)
            if name not in best or q["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name] = q
    without, with_ = best["without"], best["with"]
    return {"accuracy_without": without["accuracy"], "accuracy_with": with_["accuracy"],
            "tokens_per_s_without": without["tokens_per_s"], "tokens_per_s_with": with_["tokens_per_s"],
            "speedup": with_["tokens_per_s"] / max(without["tokens_per_s"], 1e-9),
            "answer_tokens": float(np.mean([len(tokenizer.encode(r["want"])) for r in with_["rows"]])),
            "n": with_["n"], "sprint": sprint.__dict__}


__all__ = ["question_accuracy", "drawing_accuracy", "edit_accuracy", "sprint_comparison", "QUESTION"]
