"""Monte Carlo ELBO of an answer given a prompt (LLaDA, docs/published/llada.md): the log-likelihood
estimate used for multiple-choice evaluation.

Each sample masks exactly k of the L answer tokens, k stratified over a batch
(k_i = round(linspace(k0, k0 + (b-1) L / b, b)) wrapped into [1, L]), and scores
CE(masked tokens) / (k / L); the prompt is never masked. The estimate is minus the mean loss.
A block-diffusion model (config attention "block") is scored under its block-causal mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..sampling.reference import guided_logits
from ..sequence.masks import block_causal_mask


def stratified_mask(batch: int, answer_len: int, prompt_len: int, generator=None, device=None):
    """-> (is_masked (b, P + L) bool, masked fraction (b,)) with stratified counts over the batch."""
    k0 = int(torch.randint(1, answer_len + 1, (), generator=generator))
    k = torch.linspace(float(k0), k0 + (batch - 1) * (answer_len / batch), batch).round().long()
    k = (k - 1) % answer_len + 1  # (b,) in [1, L]
    ranks = torch.stack([torch.randperm(answer_len, generator=generator) for _ in range(batch)])  # (b, L)
    answer_mask = ranks < k[:, None]
    prompt_mask = torch.zeros(batch, prompt_len, dtype=torch.bool)
    return torch.cat([prompt_mask, answer_mask], dim=1).to(device), (k.float() / answer_len).to(device)


@torch.no_grad()
def loglikelihood(model, prompt_ids, answer_ids, mc_num: int = 128, batch_size: int = 16, cfg_scale: float = 0.0,
                  mask_id: int | None = None, generator: torch.Generator | None = None) -> float:
    """Estimate log p(answer | prompt) from `mc_num` masked samples, `batch_size` per forward."""
    if mc_num % batch_size:
        raise ValueError(f"mc_num ({mc_num}) must be a multiple of batch_size ({batch_size})")
    if not len(answer_ids):
        raise ValueError("answer_ids is empty")
    mask_id = model.config.mask_id if mask_id is None else mask_id
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long)
    seq = torch.cat([prompt, torch.as_tensor(answer_ids, dtype=torch.long)])[None].repeat(batch_size, 1)
    seq = seq.to(model.device)  # (b, P + L)
    prompt_index = torch.zeros_like(seq, dtype=torch.bool)
    prompt_index[:, : len(prompt)] = True
    cfg = model.config
    mask = None
    if cfg.attention == "block":
        mask = block_causal_mask(seq.shape[1], cfg.block_size, seq.device)[None, None].expand(batch_size, -1, -1, -1)
    losses = []
    for _ in range(mc_num // batch_size):
        is_masked, frac = stratified_mask(batch_size, len(answer_ids), len(prompt), generator, seq.device)
        noisy = seq.masked_fill(is_masked, mask_id)
        logits = guided_logits(model, noisy, mask, prompt_index, cfg_scale, mask_id)
        ce = F.cross_entropy(logits[is_masked], seq[is_masked], reduction="none")  # (n_masked,)
        weight = frac[:, None].expand_as(is_masked)[is_masked]
        losses.append(float((ce / weight).sum()) / batch_size)
    return -sum(losses) / len(losses)
