"""Prompt batches and the argument checks every sampler shares.

Prompts arrive as a (B, L) tensor (already left-padded, with its attention mask) or as lists of
ids, which are left-padded here with the pad id, as the published LLaDA code expects.
"""

from __future__ import annotations

import torch


def as_prompt_batch(prompt_ids, attention_mask, pad_id, cfg, mask_id, device):
    """-> (prompt (B, L) long tensor, attention mask (B, L) or None when nothing is padded)."""
    pad_id = cfg.pad_token_id if pad_id is None else pad_id
    if pad_id == mask_id:
        raise ValueError(f"pad_id equals mask_id ({mask_id}): padding would be read as masks to denoise")
    if torch.is_tensor(prompt_ids):
        prompt = prompt_ids.to(device=device, dtype=torch.long)
        prompt = prompt[None] if prompt.dim() == 1 else prompt
        mask = None if attention_mask is None else attention_mask.to(device)
    else:
        prompt, mask = left_pad(prompt_ids, pad_id, device)
    if prompt.numel() == 0 or prompt.shape[1] == 0:
        raise ValueError("prompt_ids is empty: give at least one token")
    if (prompt >= cfg.vocab_size).any() or (prompt < 0).any():
        raise ValueError(f"prompt_ids hold ids outside the vocabulary [0, {cfg.vocab_size})")
    return prompt, mask


def left_pad(rows, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lists of ids -> left-padded (B, L) tensor and its 0/1 mask (None when no row is padded)."""
    rows = [list(rows)] if rows and isinstance(list(rows)[0], int) else [list(r) for r in rows]
    width = max((len(r) for r in rows), default=0)
    prompt = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            prompt[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    padded = bool((mask == 0).any())
    return prompt.to(device), (mask.to(device) if padded else None)


def check_lengths(cfg, prompt_len: int, gen_length: int, block_length: int, steps: int | None) -> None:
    """ValueError naming the argument when lengths, blocks and steps do not fit together."""
    if gen_length <= 0:
        raise ValueError(f"gen_length must be positive, got {gen_length}")
    if block_length <= 0:
        raise ValueError(f"block_length must be positive, got {block_length}")
    if steps is not None:
        if gen_length % block_length:
            raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
        n_blocks = gen_length // block_length
        if steps <= 0 or steps % n_blocks:
            raise ValueError(f"steps ({steps}) must be a positive multiple of the number of blocks ({n_blocks})")
    if prompt_len + gen_length > cfg.max_seq_len:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + gen_length ({gen_length}) exceeds the model's maximum "
            f"sequence length ({cfg.max_seq_len})"
        )
