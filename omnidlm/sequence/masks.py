"""Attention masks: one place that turns a sequence layout into a boolean mask.

Convention everywhere: a boolean tensor, True = the query may attend to the key, shaped
(batch, 1, query, key) when batched. `None` means full bidirectional attention. These dense masks
are the oracle that every faster attention path is tested against.
"""

from __future__ import annotations

import torch


def block_causal_mask(length: int, block_size: int, device=None) -> torch.Tensor:
    """(L, L): a position sees its own block and every earlier block (blocks aligned at 0)."""
    block = torch.arange(length, device=device) // block_size
    return block[:, None] >= block[None, :]


def bdlm_mask(length: int, block_size: int, device=None) -> torch.Tensor:
    """(2L, 2L) mask for block-diffusion training on the input [x_t | x_0] (REFERENCE.md §4).

    - noisy block -> itself (block diagonal);
    - noisy block -> strictly earlier clean blocks;
    - clean blocks -> clean blocks, block-causally; clean never sees noisy.
    """
    block = torch.arange(length, device=device) // block_size
    same = block[:, None] == block[None, :]
    earlier = block[:, None] > block[None, :]
    causal = block[:, None] >= block[None, :]
    none = torch.zeros_like(same)
    top = torch.cat([same, earlier], dim=1)  # queries in x_t
    bottom = torch.cat([none, causal], dim=1)  # queries in x_0
    return torch.cat([top, bottom], dim=0)


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) from (B, L) document ids of packed sequences: attend only within a document."""
    return (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]



def as_attention_mask(mask: torch.Tensor | None, q_len: int) -> torch.Tensor | None:
    """Normalise a user mask to bool (B, 1, Q, K).

    Accepts None (full attention), a (B, K) 0/1 key-padding mask as in HF models, or a boolean
    (B, 1, Q, K) / (1, 1, Q, K) mask.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask.bool()[:, None, None, :].expand(-1, 1, q_len, -1)
    if mask.dim() == 4:
        return mask.bool()
    raise ValueError(f"attention_mask must be (B, K) or (B, 1, Q, K), got shape {tuple(mask.shape)}")
