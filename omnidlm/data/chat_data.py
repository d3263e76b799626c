"""Chat SFT data: read JSON lines, tokenise with the chat template, pad or pack into batches.

One record per line:

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

The prompt is everything up to and including the last assistant header (earlier turns included);
the answer is the last assistant message followed by EOS. Only the answer is noised and learned.
A malformed record raises ValueError naming the file, the line and what is wrong.

Two ways to batch tokenised (prompt_ids, answer_ids) pairs:
- `collate_sft`: one example per row, right-padded with EOS that counts as answer (LLaDA SFT);
- `pack_examples`: several examples per fixed-length row with document ids, for
  `omnidlm.sequence.masks.document_mask(doc_ids)` and `sft_loss(..., doc_ids=doc_ids)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from ..sequence.chat import ROLES, render_chat

EOS = "<|endoftext|>"


def _check_record(record, where: str) -> list[dict]:
    """The messages of one parsed record, or ValueError saying what is wrong at `where`."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError(f"{where}: expected an object with a 'messages' list")
    messages = record["messages"]
    if not messages:
        raise ValueError(f"{where}: 'messages' is empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {i} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has role {m['role']!r}; valid roles: {ROLES}")
        if isinstance(m["content"], list):
            raise ValueError(f"{where}: message {i} has list content (images); only string content is supported for now")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: message {i} content must be a string, got {type(m['content']).__name__}")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be from the assistant, got {messages[-1]['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_chat_jsonl(path: str | Path) -> list[list[dict]]:
    """Every conversation of a JSON-lines file (blank lines skipped), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no chat data: {path} does not exist")
    conversations = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            conversations.append(_check_record(record, where))
    return conversations


def tokenize_chat(messages: list[dict], tok, eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids up to the last assistant header, last assistant message ids + [EOS]).

    `tok` is an `omnidlm.sequence.tokenizer.Tokenizer` (anything with `encode` and `token_id`).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("the last message must be from the assistant")
    eos_id = tok.token_id(EOS) if eos_id is None else eos_id
    if eos_id is None:
        raise ValueError(f"tokenizer has no {EOS} token; pass eos_id")
    prompt = tok.encode(render_chat(messages[:-1], add_generation_prompt=True))
    return prompt, tok.encode(messages[-1]["content"]) + [eos_id]


def load_chat_examples(path: str | Path, tok, eos_id: int | None = None) -> list[tuple[list[int], list[int]]]:
    """Read and tokenise a JSON-lines chat file: a list of (prompt_ids, answer_ids)."""
    return [tokenize_chat(messages, tok, eos_id) for messages in read_chat_jsonl(path)]


class SFTBatch(NamedTuple):
    input_ids: torch.Tensor  # (B, L) prompt + answer + padding
    answer_mask: torch.Tensor  # (B, L) bool, the maskable (learned) positions


def collate_sft(examples: list[tuple[list[int], list[int]]], eos_id: int, mask_id: int,
                length: int | None = None) -> SFTBatch:
    """One example per row, right-padded to `length` (default: the longest row).

    An answer ending in EOS is padded with EOS that counts as answer (LLaDA: the model learns to
    fill the canvas with EOS). An answer NOT ending in EOS (truncated by `adaptive_length`) is
    padded with mask tokens outside the answer: neither seen as an end nor learned.
    """
    if not examples:
        raise ValueError("collate_sft needs at least one example")
    length = length or max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), length), eos_id, dtype=torch.long)  # (B, L)
    answer = torch.zeros((len(examples), length), dtype=torch.bool)  # (B, L)
    for row, (prompt, ans) in enumerate(examples):
        n = len(prompt) + len(ans)
        if n > length:
            raise ValueError(f"example {row} has {n} tokens, more than the batch length {length}")
        ended = bool(ans) and ans[-1] == eos_id
        ids[row, :n] = torch.tensor(prompt + ans, dtype=torch.long)
        ids[row, n:] = eos_id if ended else mask_id
        answer[row, len(prompt):(length if ended else n)] = True
    return SFTBatch(ids, answer)


class PackedBatch(NamedTuple):
    input_ids: torch.Tensor  # (N, L)
    doc_ids: torch.Tensor  # (N, L) long: 0, 1, ... per row; -1 on the padding at a row's end
    position_ids: torch.Tensor  # (N, L) restarting at 0 for each document
    answer_mask: torch.Tensor  # (N, L) bool, answer tokens (the maskable positions)


def _pack_rows(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Greedy in order: start a new row when the next example does not fit. Row -> example indices."""
    rows, used = [[]], 0
    for i, n in enumerate(lengths):
        if used + n > seq_len and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows if rows[0] else []


def pack_examples(examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int,
                  truncate: bool = False) -> PackedBatch:
    """Pack (prompt_ids, answer_ids) pairs into rows of `seq_len` tokens with document ids.

    The padding at the end of a row is its own document (-1) and not answer, so it is neither
    attended by real tokens under `document_mask` nor learned. An example longer than `seq_len`
    is an error, or with `truncate` is cut on the right (losing the answer's end).
    """
    pieces = []
    for i, (prompt, answer) in enumerate(examples):
        ids, is_answer = prompt + answer, [False] * len(prompt) + [True] * len(answer)
        if len(ids) > seq_len and not truncate:
            raise ValueError(f"example {i} has {len(ids)} tokens, more than seq_len {seq_len} (pass truncate=True)")
        pieces.append((ids[:seq_len], is_answer[:seq_len]))
    rows = _pack_rows([len(ids) for ids, _ in pieces], seq_len)
    input_ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)  # (N, L)
    doc_ids = torch.full((len(rows), seq_len), -1, dtype=torch.long)  # (N, L)
    position_ids = torch.zeros((len(rows), seq_len), dtype=torch.long)  # (N, L)
    answer_mask = torch.zeros((len(rows), seq_len), dtype=torch.bool)  # (N, L)
    for r, members in enumerate(rows):
        start = 0
        for doc, i in enumerate(members):
            ids, is_answer = pieces[i]
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids, dtype=torch.long)
            doc_ids[r, start:end] = doc
            position_ids[r, start:end] = torch.arange(len(ids))
            answer_mask[r, start:end] = torch.tensor(is_answer, dtype=torch.bool)
            start = end
    return PackedBatch(input_ids, doc_ids, position_ids, answer_mask)
