"""A synthetic long-answer task with exactly checkable answers: "digit ops".

The shipped tiny text model is trained on it and the inference benchmark measures exact match on
its held-out split. Format (one user turn, answered by one assistant turn):

    user:      "<op padded to 7> <n digits, right-padded with '.' to 80>"
    assistant: "<n digits>" then EOS

    n ~ U[64, 80]; op one of
      copy     answer[i] = d[i]
      add1     answer[i] = (d[i] + 1) mod 10
      pairsum  answer[i] = (d[i] + d[i-1]) mod 10, with d[-1] = 0

    user:      "add1    0815...(64 to 80 digits)........"
    assistant: "1926...(as many digits)"<|endoftext|>

Why this shape: the op field and the digit field have fixed widths, so with the chat template
(`omnidlm.sequence.chat`) and the character tokenizer (`char_tokenizer`) every prompt is exactly
PROMPT_CHARS + 23 = 111 tokens, and answer[i] depends only on prompt characters at FIXED relative
offsets (digit i, digit i-1) plus the op name. Even where the answer stops is local: answer
position i is EOS exactly where the prompt holds '.' at digit position i. A tiny model (~1M
parameters) learns such offset lookups quickly, while answers of 65 to 81 tokens with varying
length exercise block-by-block decoding and stopping at EOS.

Splits: example ids 0 .. HELDOUT_SIZE-1 are held out (`heldout(n)` takes the first n); training
draws ids >= HELDOUT_SIZE (`train_examples(n, seed)`). Each example is a pure function of its id.

    from omnidlm.data.synthetic import heldout, encode_example, score_exact
    messages, answer = heldout(1)[0]
"""

from __future__ import annotations

import random

from ..sequence.chat import render_chat

OPS = ("copy", "add1", "pairsum")
OP_WIDTH = 7  # the op name is left-justified to this width, so digits start at a fixed offset
WIDTH = 80  # the digit field, right-padded with '.'
MIN_DIGITS, MAX_DIGITS = 64, 80
PAD_CHAR = "."
PROMPT_CHARS = OP_WIDTH + 1 + WIDTH  # length of the user text
HELDOUT_SIZE = 10_000
_TRAIN_ID_SPAN = 2**48  # training ids are drawn from [HELDOUT_SIZE, HELDOUT_SIZE + span)
EOS = "<|endoftext|>"


def apply_op(op: str, digits: str) -> str:
    """The answer for `op` on a digit string: each character a function of d[i] (and d[i-1])."""
    d = [int(c) for c in digits]
    if op == "copy":
        out = d
    elif op == "add1":
        out = [(x + 1) % 10 for x in d]
    elif op == "pairsum":
        out = [(x + prev) % 10 for x, prev in zip(d, [0] + d[:-1])]
    else:
        raise ValueError(f"unknown op {op!r}; valid ops: {OPS}")
    return "".join(str(x) for x in out)


def user_text(op: str, digits: str) -> str:
    """The user message: op field, space, digit field padded with '.' (fixed length PROMPT_CHARS)."""
    if not MIN_DIGITS <= len(digits) <= WIDTH:
        raise ValueError(f"need {MIN_DIGITS} to {WIDTH} digits, got {len(digits)}")
    return f"{op.ljust(OP_WIDTH)} {digits.ljust(WIDTH, PAD_CHAR)}"


def example(index: int, ops: tuple[str, ...] = OPS) -> tuple[list[dict], str]:
    """Example `index` (deterministic): (chat messages, answer text without EOS)."""
    if index < 0:
        raise ValueError(f"example ids are non-negative, got {index}")
    rng = random.Random(index)  # int seeding is stable across Python runs and versions
    op = ops[rng.randrange(len(ops))]
    n = rng.randint(MIN_DIGITS, MAX_DIGITS)
    digits = "".join(rng.choice("0123456789") for _ in range(n))
    return [{"role": "user", "content": user_text(op, digits)}], apply_op(op, digits)


def heldout(n: int, ops: tuple[str, ...] = OPS) -> list[tuple[list[dict], str]]:
    """The first n examples of the fixed held-out split (ids 0 .. n-1)."""
    if not 0 <= n <= HELDOUT_SIZE:
        raise ValueError(f"the held-out split has {HELDOUT_SIZE} examples, asked for {n}")
    return [example(i, ops) for i in range(n)]


def train_ids(n: int, seed: int) -> list[int]:
    """n training example ids, drawn by `seed` from ids >= HELDOUT_SIZE (never held out)."""
    rng = random.Random(seed)
    return [HELDOUT_SIZE + rng.randrange(_TRAIN_ID_SPAN) for _ in range(n)]


def train_examples(n: int, seed: int, ops: tuple[str, ...] = OPS) -> list[tuple[list[dict], str]]:
    """n training examples; a different `seed` (e.g. the step) gives fresh ones."""
    return [example(i, ops) for i in train_ids(n, seed)]


def encode_example(messages: list[dict], answer: str, tok, eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + [EOS]) with the chat template; `tok` is a sequence.tokenizer.Tokenizer."""
    eos_id = tok.token_id(EOS) if eos_id is None else eos_id
    if eos_id is None:
        raise ValueError(f"tokenizer has no {EOS} token; pass eos_id")
    return tok.encode(render_chat(messages)), tok.encode(answer) + [eos_id]


def score_exact(pred_text: str, answer_text: str) -> bool:
    """Exact match, ignoring only surrounding whitespace (decode drops EOS and other specials)."""
    return pred_text.strip() == answer_text


def exact_match(preds: list[str], answers: list[str]) -> float:
    """Fraction of exact matches."""
    if len(preds) != len(answers):
        raise ValueError(f"{len(preds)} predictions for {len(answers)} answers")
    return sum(score_exact(p, a) for p, a in zip(preds, answers)) / max(len(answers), 1)


def char_accuracy(pred_text: str, answer_text: str) -> float:
    """Fraction of answer characters right at their position (a smoother signal while training)."""
    pred = pred_text.strip()
    hits = sum(p == a for p, a in zip(pred, answer_text))
    return hits / max(len(answer_text), len(pred), 1)
