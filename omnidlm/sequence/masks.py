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
    """(2L, 2L) mask for block-diffusion training on the input [x_t | x_0] (docs/published/llada2.md).

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


# Attention modes of a segment (docs/published/lladao.md): integer codes so a mode can live in a tensor.
CAUSAL, FULL, NOISE = 0, 1, 2
MODES = {"causal": CAUSAL, "full": FULL, "noise": NOISE}


def segment_mask(split_ids: torch.Tensor, split_modes: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, L, L) mask of a sequence cut into splits (LLaDA-o's intra-modality attention).

    split_ids (B, L): split index of each token, non-decreasing along the row; split_modes (B, L):
    the token's split mode (CAUSAL / FULL / NOISE); doc_ids (B, L): packed documents, None = one.
    - a token sees every earlier split of its document, except `noise` splits;
    - inside its own split: everything (`full`, `noise`) or itself and what comes before (`causal`);
    - so a `noise` split is invisible to every other split, and clean splits form a cacheable prefix.
    """
    q_split, k_split = split_ids[:, :, None], split_ids[:, None, :]  # (B, L, 1), (B, 1, L)
    k_mode = split_modes[:, None, :]  # (B, 1, L)
    L = split_ids.shape[1]
    pos = torch.arange(L, device=split_ids.device)
    causal_ok = pos[:, None] >= pos[None, :]  # (L, L): key at or before query
    own = (q_split == k_split) & ((split_modes[:, :, None] != CAUSAL) | causal_ok)  # (B, L, L)
    earlier = (k_split < q_split) & (k_mode != NOISE)  # (B, L, L)
    mask = own | earlier
    if doc_ids is not None:
        mask &= doc_ids[:, :, None] == doc_ids[:, None, :]
    return mask[:, None]  # (B, 1, L, L)
