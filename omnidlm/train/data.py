"""Training batches as a pure function of (seed, step): the data position is the step.

Every process builds the same GLOBAL batch for a step and keeps its own rows, so the data and the
noise are identical however many processes share the batch (1 process == 2 processes, tested),
and a resumed run sees exactly the batches an uninterrupted one would.

    source = make_source(cfg, tokenizer)
    rows = source.batch(step)   # Rows: (B, L) ids, answer/maskable mask, optional doc/position ids
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch

from ..data.chat_data import collate_sft, load_chat_examples, pack_examples
from ..data.synthetic import encode_example, train_examples
from ..diffusion.masked import adaptive_length


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed for (run seed, step, purpose): distinct across steps and purposes, stable across runs."""
    return (seed * 1_000_003 + step) * 8 + salt


class Rows(NamedTuple):
    input_ids: torch.Tensor  # (B, L) clean ids x0
    maskable: torch.Tensor | None  # (B, L) bool: positions noise may touch (answers); None = all
    doc_ids: torch.Tensor | None = None  # (B, L) packed documents, else None
    position_ids: torch.Tensor | None = None  # (B, L) restarting per document, else None

    def select(self, rows: slice) -> "Rows":
        return Rows(*(None if t is None else t[rows] for t in self))


def _augment(examples, eos_id: int, rng: random.Random, p_ext: float, p_trunc: float, room: int):
    """Adaptive length augmentation per answer, cut to the row's room (extra EOS beyond it are padding anyway)."""
    out = []
    for prompt, answer in examples:
        answer = adaptive_length(answer, eos_id, rng, p_ext, p_trunc) if (p_ext or p_trunc) else answer
        out.append((prompt, answer[: max(room - len(prompt), 0)]))
    return out


class SyntheticSource:
    """Fresh digit-ops examples (data.synthetic) every step, one per row, EOS-padded to seq_len."""

    def __init__(self, cfg, tokenizer):
        self.cfg, self.tok = cfg, tokenizer
        self.eos_id, self.mask_id = cfg.model.eos_id, cfg.model.mask_id

    def examples(self, step: int) -> list[tuple[list[int], list[int]]]:
        pairs = train_examples(self.cfg.batch_size, seed=step_seed(self.cfg.seed, step, 1))
        return [encode_example(messages, answer, self.tok, self.eos_id) for messages, answer in pairs]

    def batch(self, step: int) -> Rows:
        rng = random.Random(step_seed(self.cfg.seed, step, 2))
        examples = _augment(self.examples(step), self.eos_id, rng, self.cfg.p_ext, self.cfg.p_trunc, self.cfg.seq_len)
        ids, answer = collate_sft(examples, self.eos_id, self.mask_id, length=self.cfg.seq_len)
        return Rows(ids, answer)


class ChatSource:
    """Conversations of a JSON-lines file in a fresh order each epoch (data.chat_data)."""

    def __init__(self, cfg, tokenizer):
        if not cfg.data_path:
            raise ValueError("train field 'data_path' is required with data=chat: pass data_path=FILE.jsonl")
        self.cfg = cfg
        self.eos_id, self.mask_id = cfg.model.eos_id, cfg.model.mask_id
        self.examples = load_chat_examples(cfg.data_path, tokenizer, self.eos_id)
        if not self.examples:
            raise ValueError(f"no conversations in {cfg.data_path}")
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.examples)))
            random.Random(step_seed(self.cfg.seed, epoch, 3)).shuffle(order)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def _indices(self, step: int) -> list[int]:
        """Example indices of `step`: the batch_size examples after step * batch_size in epoch order."""
        n, b = len(self.examples), self.cfg.batch_size
        return [self._order(k // n)[k % n] for k in range(step * b, (step + 1) * b)]

    def batch(self, step: int) -> Rows:
        chosen = [self.examples[i] for i in self._indices(step)]
        rng = random.Random(step_seed(self.cfg.seed, step, 2))
        chosen = _augment(chosen, self.eos_id, rng, self.cfg.p_ext, self.cfg.p_trunc, self.cfg.seq_len)
        if self.cfg.pack:
            packed = pack_examples(chosen, self.cfg.seq_len, self.eos_id, truncate=True)
            return Rows(packed.input_ids, packed.answer_mask, packed.doc_ids, packed.position_ids)
        too_long = [i for i, (p, a) in enumerate(chosen) if len(p) >= self.cfg.seq_len]
        if too_long:
            raise ValueError(f"{self.cfg.data_path}: a prompt is longer than seq_len {self.cfg.seq_len}; raise seq_len")
        ids, answer = collate_sft(chosen, self.eos_id, self.mask_id, length=self.cfg.seq_len)
        return Rows(ids, answer)


def make_source(cfg, tokenizer):
    return SyntheticSource(cfg, tokenizer) if cfg.data == "synthetic" else ChatSource(cfg, tokenizer)
