"""Masked discrete diffusion over tokens: noising, every text loss of the family, length augmentation.

The network knows nothing of noise. These functions either turn clean token ids `x0` into a noised
input (`forward_mask`, `bdlm_inputs`, `with_complement`) or take the network's `logits` and return a
loss. Sources (docs/published/):

    LLaDA        sample_t, forward_mask, maybe_crop, pretrain_loss, sft_loss  (llada.md)
    LLaDA-o      lladao_text_loss, adaptive_length                           (lladao.md)
    LLaDA2.0     bdlm_inputs (BD3-LM style [x_t | x_0]), bdlm_loss,
                 mask_token_weights (Mask Token Reweighting), with_complement (llada2.md)

Conventions: `x0` (B, L) clean ids; `is_masked` (B, L) bool, True where the input holds the mask
token; `maskable` (B, L) bool, the positions noise may touch (answers in SFT; None = all);
`p_mask` the masking probability, shaped (B,), (B, 1) or (B, L). Losses are computed in float32
over the masked positions only, so a 126k-entry vocabulary costs memory for masked tokens alone.

    p_mask = sample_t(B)
    xt, is_masked = forward_mask(x0, p_mask, mask_id, maskable)
    loss = sft_loss(model(xt), x0, is_masked, p_mask, answer_mask=maskable)
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..sequence.masks import bdlm_mask

# --- noising ----------------------------------------------------------------------------------


def sample_t(batch: int, eps: float = 1e-3, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """LLaDA: t ~ U(0, 1), p_mask = (1 - eps) t + eps, so p_mask lies in [eps, 1]. Returns (B,)."""
    t = torch.rand(batch, generator=generator, device=device)  # (B,)
    return (1 - eps) * t + eps


def sample_bdlm_t(batch: int, low: float = 0.3, high: float = 0.8,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """LLaDA2.0 block diffusion: t ~ U[low, high] (0.3, 0.8), used directly as p_mask. Returns (B,)."""
    return low + (high - low) * torch.rand(batch, generator=generator, device=device)  # (B,)


def _per_token(p_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast p_mask of shape (B,), (B, 1) or (B, L) to (B, L) float."""
    p = p_mask.to(device=like.device, dtype=torch.float32)
    if p.dim() == 1:
        p = p[:, None]
    return p.expand(like.shape[0], like.shape[1])


def _draw_device(generator: torch.Generator | None, fallback) -> torch.device:
    """Random draws happen on the generator's device (a CUDA generator cannot fill a CPU tensor)."""
    return generator.device if generator is not None else torch.device(fallback)


def apply_mask(x0: torch.Tensor, is_masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    """x_t: the mask token where `is_masked`, x0 elsewhere. (B, L)."""
    return torch.where(is_masked, torch.full_like(x0, mask_id), x0)


def forward_mask(x0: torch.Tensor, p_mask: torch.Tensor, mask_id: int, maskable: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA forward process: mask each maskable token independently with probability p_mask.

    Returns (xt (B, L), is_masked (B, L) bool). Positions outside `maskable` (the prompt in SFT)
    are never masked.
    """
    p = _per_token(p_mask, x0)  # (B, L)
    # 1. one uniform draw per token, on the generator's device
    u = torch.rand(x0.shape, generator=generator, device=_draw_device(generator, x0.device))
    # 2. masked where the draw falls under p_mask, and only where noise is allowed
    is_masked = u.to(x0.device) < p  # (B, L)
    if maskable is not None:
        is_masked &= maskable.bool()
    # 3. replace by the mask token
    return apply_mask(x0, is_masked, mask_id), is_masked


def maybe_crop(x0: torch.Tensor, prob: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """LLaDA pretraining: with probability `prob`, crop the whole batch to a length in [1, L].

    Teaches the model variable-length inputs although batches are packed to a fixed length.
    """
    device = _draw_device(generator, "cpu")
    if torch.rand(1, generator=generator, device=device).item() >= prob:
        return x0
    length = int(torch.randint(1, x0.shape[1] + 1, (1,), generator=generator, device=device))
    return x0[:, :length]  # (B, length)


def complementary_mask(is_masked: torch.Tensor, maskable: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse mask over maskable positions: every maskable token is masked in exactly one copy."""
    inverse = ~is_masked
    return inverse & maskable.bool() if maskable is not None else inverse


def with_complement(x0: torch.Tensor, is_masked: torch.Tensor, mask_id: int,
                    maskable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLaDA2.0 complementary masking: append a second copy of each sample with the inverse mask.

    Returns (x0 (2B, L), xt (2B, L), is_masked (2B, L)); rows B..2B-1 are the complements of 0..B-1.
    With per-sample p_mask, the complement's masking probability is 1 - p_mask.
    """
    both = torch.cat([is_masked, complementary_mask(is_masked, maskable)], dim=0)  # (2B, L)
    x0_2 = torch.cat([x0, x0], dim=0)  # (2B, L)
    return x0_2, apply_mask(x0_2, both, mask_id), both


# --- losses -----------------------------------------------------------------------------------


def masked_ce(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (float32) at the masked positions only, in row-major order. (N,) for N masked."""
    return F.cross_entropy(logits[is_masked].float(), x0[is_masked], reduction="none")  # (N,)


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph (every parameter gets a zero gradient) when nothing is masked."""
    return logits.sum() * 0.0


def pretrain_loss(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, p_mask: torch.Tensor) -> torch.Tensor:
    """LLaDA pretraining: sum over masked tokens of CE / p_mask, divided by B * L.

    logits (B, L, V), x0 (B, L), is_masked (B, L), p_mask (B,) / (B, 1) / (B, L).
    """
    if not is_masked.any():
        return _zero(logits)
    ce = masked_ce(logits, x0, is_masked)  # (N,)
    p = _per_token(p_mask, x0)[is_masked]  # (N,)
    return (ce / p).sum() / x0.numel()


def _segments(answer_mask: torch.Tensor, doc_ids: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Segment index per position: the row, or (row, document) for packed rows. ((B, L) long, count)."""
    B, L = answer_mask.shape
    row = torch.arange(B, device=answer_mask.device)[:, None].expand(B, L)  # (B, L)
    if doc_ids is None:
        return row, B
    pairs = torch.stack([row.reshape(-1), doc_ids.reshape(-1).to(row.device)], dim=1)  # (B*L, 2)
    _, seg = torch.unique(pairs, dim=0, return_inverse=True)
    return seg.view(B, L), int(seg.max()) + 1


def _answer_lengths(answer_mask: torch.Tensor, is_masked: torch.Tensor,
                    doc_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(segment per position (B, L), answer length per segment (S,), answer length per position (B, L))."""
    answer_mask = answer_mask.bool()
    if (is_masked & ~answer_mask).any():
        raise ValueError("is_masked marks positions outside answer_mask: the prompt must never be masked")
    seg, count = _segments(answer_mask, doc_ids)
    lengths = torch.zeros(count, device=answer_mask.device).index_add_(
        0, seg.reshape(-1), answer_mask.reshape(-1).float())  # (S,)
    return seg, lengths, lengths[seg]


def sft_loss(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, p_mask: torch.Tensor,
             answer_mask: torch.Tensor, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA SFT: per sample sum(CE / p_mask) / answer_len, averaged over the batch.

    `answer_mask` (B, L) marks the answer including its EOS padding (learned, as in LLaDA); the
    prompt must be unmasked. With `doc_ids` (B, L) from packing, each document is a sample.
    Samples without answer tokens (packing's padding) are not counted.
    """
    # 1. CE of masked tokens, each divided by its p_mask and its own sample's answer length
    _, lengths, per_pos = _answer_lengths(answer_mask, is_masked, doc_ids)
    if not is_masked.any():
        return _zero(logits)
    ce = masked_ce(logits, x0, is_masked)  # (N,)
    p = _per_token(p_mask, x0)[is_masked]  # (N,)
    terms = ce / (p * per_pos[is_masked])  # (N,)
    # 2. average over the samples that have an answer
    n_samples = (lengths > 0).sum().clamp(min=1)
    return terms.sum() / n_samples


def lladao_text_loss(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, p_mask: torch.Tensor,
                     answer_mask: torch.Tensor, doc_ids: torch.Tensor | None = None,
                     global_weight_sum: torch.Tensor | float | None = None) -> torch.Tensor:
    """LLaDA-o text loss: CE weighted 1 / (sqrt(answer_len) * p_mask), normalised by the GLOBAL
    sum of the weights of all masked tokens (all ranks, all micro-batches of the step).

    The global sum is `global_weight_sum` when given, else this batch's sum all-reduced over the
    process group when torch.distributed is initialised. The result is multiplied by the world
    size, because DDP / FSDP *average* gradients over ranks: after that averaging the gradient is
    the one of sum_all(w * CE) / sum_all(w). On one process it is the plain weighted mean. With
    gradient accumulation, pass the step's `global_weight_sum` and sum (not average) the losses.
    """
    # 1. per-token weights at the masked positions
    _, _, per_pos = _answer_lengths(answer_mask, is_masked, doc_ids)
    p = _per_token(p_mask, x0)[is_masked]  # (N,)
    w = 1.0 / (per_pos[is_masked].sqrt() * p)  # (N,)
    # 2. the global normaliser
    world = 1
    if global_weight_sum is None:
        total = w.sum().detach()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            world = torch.distributed.get_world_size()
    else:
        total = torch.as_tensor(global_weight_sum, dtype=torch.float32, device=w.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
    if w.numel() == 0:
        return _zero(logits)
    # 3. this rank's share of the weighted sum
    ce = masked_ce(logits, x0, is_masked)  # (N,)
    return (w * ce).sum() / total.clamp(min=1e-12) * world


def mask_token_weights(is_masked: torch.Tensor) -> torch.Tensor:
    """LLaDA2.0 Mask Token Reweighting: sample weight 1 / sqrt(#masked), normalised over the batch.

    Returns per-token weights (B, L), zero at unmasked positions, summing to 1 over the batch: a
    sample with m masked tokens gives each 1/sqrt(m), so its total weight grows as sqrt(m) rather
    than m. When every sample has the same m this is the plain mean.
    """
    m = is_masked.sum(dim=1, keepdim=True).float()  # (B, 1)
    w = is_masked.float() / m.clamp(min=1).sqrt()  # (B, L)
    return w / w.sum().clamp(min=1e-12)


def bdlm_loss(logits: torch.Tensor, x0: torch.Tensor, is_masked: torch.Tensor, reweight: bool = False) -> torch.Tensor:
    """LLaDA2.0 block diffusion: plain CE mean over masked tokens (no 1/t).

    `logits` (B, L, V) are the x_t half of the model output on [x_t | x_0] (`out[:, :L]`).
    `reweight=True` applies Mask Token Reweighting (`mask_token_weights`) instead of the mean.
    """
    if not is_masked.any():
        return _zero(logits)
    ce = masked_ce(logits, x0, is_masked)  # (N,)
    if not reweight:
        return ce.mean()
    return (mask_token_weights(is_masked)[is_masked] * ce).sum()


# --- block diffusion inputs --------------------------------------------------------------------


class BDLMBatch(NamedTuple):
    """Model input for block-diffusion training on [x_t | x_0]."""

    input_ids: torch.Tensor  # (B, 2L): x_t then x_0
    position_ids: torch.Tensor  # (2L,): 0..L-1 twice, the clean copy sits at the noisy positions
    attention_mask: torch.Tensor  # (2L, 2L) bool, True = may attend (sequence.masks.bdlm_mask)
    x0: torch.Tensor  # (B, L) targets
    is_masked: torch.Tensor  # (B, L) where x_t holds the mask token


def bdlm_inputs(x0: torch.Tensor, t: torch.Tensor | None, block_size: int, mask_id: int,
                maskable: torch.Tensor | None = None, generator: torch.Generator | None = None,
                complementary: bool = False) -> BDLMBatch:
    """LLaDA2.0 / BD3-LM training input: noise x0 into x_t and concatenate the clean copy.

    t (B,) is the masking probability; None samples t ~ U[0.3, 0.8]. Blocks are aligned at
    position 0 of the sequence, as in the sampler. With `complementary`, the batch doubles (2B)
    with the inverse masks appended (`with_complement`).
    """
    B, L = x0.shape
    # 1. noise level and the noised copy
    if t is None:
        t = sample_bdlm_t(B, generator=generator, device=_draw_device(generator, x0.device)).to(x0.device)
    xt, is_masked = forward_mask(x0, t, mask_id, maskable, generator)  # (B, L)
    if complementary:
        x0, xt, is_masked = with_complement(x0, is_masked, mask_id, maskable)  # (2B, L)
    # 2. [x_t | x_0], positions repeated, and the block-diffusion attention pattern
    input_ids = torch.cat([xt, x0], dim=1)  # (B, 2L)
    position_ids = torch.arange(L, device=x0.device).repeat(2)  # (2L,)
    return BDLMBatch(input_ids, position_ids, bdlm_mask(L, block_size, device=x0.device), x0, is_masked)


# --- length augmentation -----------------------------------------------------------------------


def adaptive_length(answer_ids: list[int], eos_id: int, rng: random.Random, p_ext: float = 0.1,
                    p_trunc: float = 0.1, min_trunc_len: int = 16) -> list[int]:
    """LLaDA-o adaptive length augmentation on one answer (token list, before padding).

    `answer_ids` is the answer content; trailing EOS tokens, if any, are stripped first. Returns:
      - usually content + [EOS];
      - with probability p_ext, content + [EOS] + k extra EOS, k ~ U[1, len];
      - with probability p_trunc (only if len > min_trunc_len), a random proper prefix content[:j],
        j ~ U[1, len - 1], with NO EOS: the model learns that an answer may run past the canvas.
    The two augmentations are exclusive (one uniform draw decides).
    """
    content = list(answer_ids)
    while content and content[-1] == eos_id:
        content.pop()
    n = len(content)
    u = rng.random()
    if u < p_ext and n > 0:
        return content + [eos_id] * (1 + rng.randint(1, n))
    if p_ext <= u < p_ext + p_trunc and n > min_trunc_len:
        return content[: rng.randint(1, n - 1)]
    return content + [eos_id]
