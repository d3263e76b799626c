"""How well a LLaDA2.0-Uni digits model reads, draws and edits held-out digits (for demo and bench).

    question_accuracy(model, tok)            "What digit is shown?" on held-out digits 1500-1796
    drawing_accuracy(model, tok)             "a handwritten digit N" drawn, judged by the SVC
    edit_accuracy(model, tok)                "Change the digit to N." on held-out digits, judged
    interleaved_accuracy(model, tok)         "Draw the digits A and B.": both named and drawn (judged)
    thinking_accuracy(model, tok)            "Draw the digit after D. Think first.": reasoned and drawn
    sprint_comparison(model, tok)            long answers (64+ tokens) with and without SPRINT

The free-answer prompts are the training templates (every pair and every D occurs in training);
what is held out is nothing the model could copy: the answers are judged on the images it draws.
"""

from __future__ import annotations

import random
import re
import time

import numpy as np

from ..data.digits import QUESTION, caption, digit_images, question_answer
from ..data.uni_batches import DETAIL, detailed_answer, edit_instruction, interleaved_request, thinking_request
from ..sampling import uni as U
from ..sampling.image import draw_uni, edit_uni
from ..systems.uni import CFG
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
                     decoder_steps: int | None = None, cfg: float = CFG) -> dict:
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


# --- free answers: interleaved pairs and thinking-then-drawing ---------------------------------------

PAIR = re.compile(r"^Here is (\d): \[image\] and here is (\d): \[image\]$")
THOUGHT = re.compile(r"^(\d) plus 1 is (\d+), so I draw a (\d+): \[image\]$")


def _judged(answers, judge) -> list[list[int]]:
    """The judge's digit for every image of every answer."""
    every = [im for a in answers for im in a.images]
    predicted = iter(judge.predict(np.stack(every)).tolist()) if every else iter(())
    return [[next(predicted) for _ in a.images] for a in answers]


def interleaved_accuracy(model, tokenizer, n: int | None = None, seed: int = 0, config=None,
                         keep_images: bool = False) -> dict:
    """"Draw the digits A and B." for all 100 pairs (or n distinct random ones): right when the answer
    reads "Here is A: [image] and here is B: [image]" and the judge sees A then B in the two images."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    if n is not None:
        pairs = random.Random(seed).sample(pairs, min(n, len(pairs)))
    n = len(pairs)
    start = time.time()
    answers = U.respond_many(model, tokenizer, [interleaved_request(a, b) for a, b in pairs], config=config)
    seconds = time.time() - start
    rows = []
    for (a, b), ans, seen in zip(pairs, answers, _judged(answers, DigitJudge.fit())):
        match = PAIR.match(ans.text.strip())
        named = bool(match) and (int(match[1]), int(match[2])) == (a, b)
        drawn = seen == [a, b]
        rows.append({"want": [a, b], "answer": ans.text, "judged": seen, "named": named, "drawn": drawn,
                     "ok": named and drawn, **({"images": ans.images} if keep_images else {})})
    return {"accuracy": float(np.mean([r["ok"] for r in rows])), "named": float(np.mean([r["named"] for r in rows])),
            "drawn": float(np.mean([r["drawn"] for r in rows])), "n": n, "seconds_per_answer": seconds / n,
            "rows": rows}


def thinking_accuracy(model, tokenizer, config=None, keep_images: bool = False) -> dict:
    """"Draw the digit after D. Think first." for every D = 0..8: right when the answer reasons
    "D plus 1 is E, so I draw a E: [image]" with E = D + 1 and the judge sees E in the image."""
    befores = list(range(9))
    start = time.time()
    answers = U.respond_many(model, tokenizer, [thinking_request(d) for d in befores], config=config)
    seconds = time.time() - start
    rows = []
    for d, ans, seen in zip(befores, answers, _judged(answers, DigitJudge.fit())):
        match = THOUGHT.match(ans.text.strip())
        reasoned = bool(match) and (int(match[1]), int(match[2]), int(match[3])) == (d, d + 1, d + 1)
        drawn = seen == [d + 1]
        rows.append({"before": d, "answer": ans.text, "judged": seen, "reasoned": reasoned, "drawn": drawn,
                     "ok": reasoned and drawn, **({"images": ans.images} if keep_images else {})})
    n = len(rows)
    return {"accuracy": float(np.mean([r["ok"] for r in rows])), "reasoned": float(np.mean([r["reasoned"] for r in rows])),
            "drawn": float(np.mean([r["drawn"] for r in rows])), "n": n, "seconds_per_answer": seconds / n,
            "rows": rows}


# SPRINT for the digits: its non-uniform unmasking, no pruning. On these prompts (about 60 tokens,
# every one needed) pruning even 5% of the text prefix breaks most long answers (docs/benchmarks.md).
DIGITS_SPRINT = dict(keep_text=1.0, keep_image=1.0, threshold=0.7, min_accept=8)


def sprint_comparison(model, tokenizer, limit: int = 40, seed: int = 0, sprint=None, repeats: int = 5) -> dict:
    """'Describe the image in detail.' (answers of 64+ tokens) with and without SPRINT, same engine.

    The two settings run alternately `repeats` times; each keeps its best tokens/s (machines are
    noisy: on the shared 2-core CPU two repeats of these 10-second runs gave 0.67x one time and
    1.50x the next, so five).
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


__all__ = ["question_accuracy", "drawing_accuracy", "edit_accuracy", "interleaved_accuracy", "thinking_accuracy",
           "sprint_comparison", "QUESTION"]
