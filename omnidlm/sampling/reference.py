"""The published samplers, reproduced exactly: they are the oracles the fast engine is tested against.

- `generate`: LLaDA's sampler (docs/published/llada.md). The canvas [prompt | gen_length masks] is
  denoised block by block, left to right; each step runs the model on the whole canvas and commits
  a scheduled number of the most confident masked positions of the current block.
- `generate_llada2`: LLaDA2.0's block-causal threshold sampler (docs/published/llada2.md).

Both reproduce `shared/fixtures/*/reference.json` token for token (tests/test_reference_samplers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .prompts import as_prompt_batch, check_lengths


def transfer_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) masked counts -> (B, steps) tokens to commit per step: base, the first `rem` steps +1."""
    base, rem = n_masked // steps, n_masked % steps  # (B,)
    schedule = base[:, None].repeat(1, steps)  # (B, S)
    schedule += torch.arange(steps, device=n_masked.device)[None] < rem[:, None]
    return schedule


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """argmax of exp(logits) / (-log U)^temperature in float64; temperature 0 is a plain argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.double()
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.exp() / (-torch.log(u)) ** temperature).argmax(-1)


def guided_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id) -> torch.Tensor:
    """Logits of the canvas; with cfg_scale > 0, un + (scale + 1) (cond - un), prompt masked in un."""
    if cfg_scale <= 0:
        return model(x, attention_mask=attention_mask).logits
    uncond = x.masked_fill(prompt_index, mask_id)
    both = torch.cat([x, uncond])
    mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    cond, un = model(both, attention_mask=mask).logits.chunk(2)
    return un + (cfg_scale + 1) * (cond - un)


@torch.no_grad()
def generate(model, prompt_ids, attention_mask=None, steps=128, gen_length=128, block_length=128,
             temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=None, pad_id=None,
             ban_ids=(), generator=None) -> torch.Tensor:
    """LLaDA's reference sampler. Returns the generated part (B, gen_length), prompt excluded.

    `prompt_ids`: a (B, L) tensor (left-padded, with `attention_mask`) or lists of ids (left-padded
    here with `pad_id`). `ban_ids` (e.g. EOS, EoT) get -inf logits before the argmax.
    """
    cfg = model.config
    mask_id = cfg.mask_id if mask_id is None else mask_id
    prompt, attention_mask = as_prompt_batch(prompt_ids, attention_mask, pad_id, cfg, mask_id, model.device)
    check_lengths(cfg, prompt.shape[1], gen_length, block_length, steps)
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    B, P = prompt.shape
    x = torch.cat([prompt, prompt.new_full((B, gen_length), mask_id)], dim=1)  # (B, P + G)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, gen_length)], dim=1)
    prompt_index = x != mask_id
    n_blocks = gen_length // block_length
    steps_per_block = steps // n_blocks
    for b in range(n_blocks):
        block_end = P + (b + 1) * block_length
        schedule = transfer_schedule((x[:, block_end - block_length : block_end] == mask_id).sum(1), steps_per_block)
        for i in range(steps_per_block):
            is_masked = x == mask_id
            logits = guided_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id)
            if ban_ids:
                logits[..., list(ban_ids)] = float("-inf")
            x0 = gumbel_argmax(logits, temperature, generator)
            if remasking == "low_confidence":
                conf = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            else:
                conf = torch.rand(x0.shape, device=x0.device, generator=generator)
            conf[:, block_end:] = float("-inf")
            conf = torch.where(is_masked, conf, float("-inf"))
            commit = torch.zeros_like(is_masked)
            for row in range(B):
                commit[row, conf[row].topk(int(schedule[row, i])).indices] = True
            x = torch.where(commit, x0, x)
    return x[:, P:]


def sample_tokens(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """LLaDA2's token sampler: -> (tokens, probability of each token under the sampling distribution)."""
    if temperature == 0:
        probs = F.softmax(logits, dim=-1)
        tokens = logits.argmax(-1)
        return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    tokens = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    return tokens, probs.gather(-1, tokens[..., None]).squeeze(-1)


@torch.no_grad()
def generate_llada2(model, prompt_ids, gen_length=2048, block_length=32, steps=32, threshold=0.95,
                    temperature=0.0, top_k=None, top_p=None, minimal_topk=1, eos_id=None, mask_id=None,
                    generator=None) -> torch.Tensor:
    """LLaDA2.0's block-causal threshold sampler for one prompt (1, P) or a list of ids.

    Returns the tokens after the prompt, cut after the first EOS (1, n <= gen_length).
    """
    from ..sequence.masks import block_causal_mask

    cfg = model.config
    mask_id = cfg.mask_id if mask_id is None else mask_id
    eos_id = cfg.eos_id if eos_id is None else eos_id
    prompt, _ = as_prompt_batch(prompt_ids, None, None, cfg, mask_id, model.device)
    if prompt.shape[0] != 1:
        raise ValueError(f"generate_llada2 takes one prompt, got a batch of {prompt.shape[0]}")
    P = prompt.shape[1]
    check_lengths(cfg, P, gen_length, block_length, None)
    steps = min(steps, gen_length // minimal_topk)
    n_blocks = -(-(P + gen_length) // block_length)
    total = n_blocks * block_length
    x = torch.cat([prompt, prompt.new_full((1, total - P), mask_id)], dim=1)  # (1, T)
    mask = block_causal_mask(total, block_length, device=x.device)[None, None]  # (1, 1, T, T)
    schedule = transfer_schedule(torch.tensor([block_length]), steps)[0].tolist()
    for b in range(P // block_length, n_blocks):
        end = (b + 1) * block_length
        for step in range(steps):
            active = x[:, end - block_length : end] == mask_id  # (1, block)
            if not active.any():
                break
            logits = model(x[:, :end], attention_mask=mask[:, :, :end, :end]).logits[:, -block_length:]
            x0, p = sample_tokens(logits, temperature, top_k, top_p, generator)
            conf = torch.where(active, p, float("-inf"))[0]
            commit = conf > threshold
            if int(commit.sum()) < schedule[step]:
                commit = torch.zeros_like(commit)
                commit[conf.topk(min(schedule[step], int(active.sum()))).indices] = True
            block = x[0, end - block_length : end]
            block[commit] = x0[0, commit]
        if (x[0, P:end] == eos_id).any():
            break
    out = x[0, P : P + gen_length]
    eos = (out == eos_id).nonzero()
    return out[: int(eos[0]) + 1 if len(eos) else gen_length][None]
