"""LLaDA2.0-Uni training sequences for the digits (docs/published/uni.md): every task is one token sequence.

Images are discrete codes of the SigLIP-VQ tokenizer, written into the sequence as
`<image> <imgsize_h> <imgsize_w> code... </image>` (`models/uni.py` `UniVocab`), so understanding,
drawing, editing, interleaved answers and thinking are all [prompt | answer] pairs of ids, trained by
block diffusion over the answer (`diffusion/masked.py` `bdlm_inputs`):

    understanding  user: <image> "What digit is shown?"            -> "seven"
    text-to-image  user: "a handwritten digit 7"                   -> <image>
    editing        user: <image of 3> "Change the digit to 7."     -> <image of a 7>
    interleaved    user: "Draw the digits 3 and 5."                -> "Here is 3: <image> and here is 5: <image>"
    thinking       user: "Draw the digit after 6. Think first."    -> "6 plus 1 is 7, so I draw a 7: <image>"

    codec = UniCodec(tokenizer, vocab)
    prompt, answer = codec.task("understanding", codes, rng, question="What digit is shown?", answer="seven")
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .digits import WORDS, caption, question_answer
from .omni_batches import PromptCodec

TASKS = ("understanding", "t2i", "edit", "interleaved", "thinking")
DETAIL = "Describe the image in detail."  # the long answer (64+ tokens) that SPRINT is measured on


def edit_instruction(target: int) -> str:
    return f"Change the digit to {target}."


def interleaved_request(a: int, b: int) -> str:
    return f"Draw the digits {a} and {b}."


def thinking_request(before: int) -> str:
    return f"Draw the digit after {before}. Think first."


def detailed_answer(label: int) -> str:
    """A description of 64+ characters (one token each with the character tokenizer)."""
    parity = "an even" if label % 2 == 0 else "an odd"
    return f"A handwritten {WORDS[label]}, white on black. It is {parity} number; next is {(label + 1) % 10}."


class UniCodec(PromptCodec):
    """Prompt / answer ids for the Uni tasks: the chat template of `PromptCodec` plus image codes."""

    def __init__(self, tokenizer, vocab):
        super().__init__(tokenizer)
        self.vocab = vocab

    def image(self, codes: torch.Tensor) -> list[int]:
        return self.vocab.image_ids(codes)

    def user(self, text: str, image: torch.Tensor | None = None) -> list[int]:
        """head [image] text, end of turn, assistant header."""
        return self.head() + (self.image(image) if image is not None else []) + self.tail(text)

    def understanding(self, codes: torch.Tensor, question: str, answer: str) -> tuple[list[int], list[int]]:
        return self.user(question, codes), self.answer(answer)

    def t2i(self, prompt: str, codes: torch.Tensor) -> tuple[list[int], list[int]]:
        return self.user(prompt), self.image(codes)

    def edit(self, source: torch.Tensor, instruction: str, target: torch.Tensor) -> tuple[list[int], list[int]]:
        return self.user(instruction, source), self.image(target)

    def interleaved(self, a: int, b: int, codes_a: torch.Tensor, codes_b: torch.Tensor) -> tuple[list[int], list[int]]:
        answer = (self.answer(f"Here is {a}: ") + self.image(codes_a) + self.answer(f" and here is {b}: ")
                  + self.image(codes_b))
        return self.user(interleaved_request(a, b)), answer

    def thinking(self, before: int, codes: torch.Tensor) -> tuple[list[int], list[int]]:
        after = before + 1
        reasoning = self.answer(f"{before} plus 1 is {after}, so I draw a {after}: ")
        return self.user(thinking_request(before)), reasoning + self.image(codes)


@dataclass
class UniExample:
    prompt: list[int]
    answer: list[int]  # without EOS; the batch appends EOS padding


class DigitsUniTasks:
    """Random Uni examples over the training digits' codes (several augmented code grids per image)."""

    def __init__(self, codec: UniCodec, codes: torch.Tensor, labels, weights: dict[str, float],
                 kinds=("word", "word", "describe", "arithmetic", "detail"), text_drop: float = 0.1):
        self.codec, self.codes, self.labels = codec, codes, [int(x) for x in labels]  # codes (A, N, h, w)
        self.text_drop = text_drop  # t2i captions replaced by the empty prompt: CFG's unconditional branch
        self.tasks, self.weights = zip(*[(k, w) for k, w in weights.items() if w > 0])
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown Uni task(s) {sorted(unknown)}; valid tasks: {', '.join(TASKS)}")
        self.kinds = kinds
        self.by_label = {d: [i for i, y in enumerate(self.labels) if y == d] for d in range(10)}

    def grid(self, i: int, rng: random.Random) -> torch.Tensor:
        return self.codes[rng.randrange(self.codes.shape[0]), i]  # one augmented copy of image i

    def of_digit(self, d: int, rng: random.Random) -> torch.Tensor:
        return self.grid(rng.choice(self.by_label[d]), rng)

    def example(self, rng: random.Random) -> UniExample:
        task = rng.choices(self.tasks, self.weights)[0]
        i = rng.randrange(len(self.labels))
        label, c = self.labels[i], self.codec
        if task == "understanding":
            kind = rng.choice(self.kinds)
            q, a = (DETAIL, detailed_answer(label)) if kind == "detail" else question_answer(label, kind, rng)
            return UniExample(*c.understanding(self.grid(i, rng), q, a))
        if task == "t2i":
            prompt = "" if rng.random() < self.text_drop else caption(label)
            return UniExample(*c.t2i(prompt, self.grid(i, rng)))
        if task == "edit":
            target = rng.choice([d for d in range(10) if d != label])
            return UniExample(*c.edit(self.grid(i, rng), edit_instruction(target), self.of_digit(target, rng)))
        if task == "interleaved":
            b = rng.randrange(10)
            return UniExample(*c.interleaved(label, b, self.grid(i, rng), self.of_digit(b, rng)))
        before = rng.randrange(9)  # thinking: the digit after `before`
        return UniExample(*c.thinking(before, self.of_digit(before + 1, rng)))


def collate(examples: list[UniExample], length: int, eos_id: int, block: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """-> x0 (B, L) with EOS padding after each answer, and the answer mask (B, L): L is the longest
    example plus one EOS, rounded up to a whole number of blocks, at most `length`.

    The answer and its EOS padding up to the end of the block holding its first EOS are noised and
    trained (the model learns where an answer ends inside a block, as the sampler needs: it stops
    after that block). Padding in later blocks stays clean and out of the loss: under block-causal
    attention no earlier position sees it, and it would otherwise outweigh short answers.
    """
    longest = max(len(ex.prompt) + len(ex.answer) for ex in examples) + 1
    if longest > length:
        raise ValueError(f"example of {longest} tokens does not fit a row of {length}")
    L = min(length, -(-longest // block) * block)
    x0 = torch.full((len(examples), L), eos_id, dtype=torch.long)
    maskable = torch.zeros(len(examples), L, dtype=torch.bool)
    for r, ex in enumerate(examples):
        ids = ex.prompt + ex.answer
        x0[r, :len(ids)] = torch.tensor(ids)
        end = min(L, -(-(len(ids) + 1) // block) * block)  # the end of the block holding the first EOS
        maskable[r, len(ex.prompt):end] = True
    return x0, maskable
