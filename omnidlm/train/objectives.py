"""From a global batch of clean rows to this process's micro-batches and their losses.

The noise of a step is drawn once for the GLOBAL batch (every process draws the same), and every
loss is normalised by a GLOBAL count, so that summing micro-batch losses over accumulation steps
and averaging gradients over processes (DDP / FSDP) gives exactly the gradient of the global-batch
loss of `diffusion.masked`. Each micro-batch loss is therefore `local loss * local share * world`:

    bdlm     mean CE over masked tokens      share = masked tokens here / masked tokens in the step
    bdlm+MTR 1/sqrt(#masked) weighting       share = sum sqrt(#masked) here / in the step
    sft      mean over samples               share = samples here / samples in the step
    pretrain sum / (B * L)                   share = rows here / rows in the step
    lladao   normalised by the global weight sum, passed to `lladao_text_loss`

Block diffusion inputs are trimmed (`trim_bdlm`): noisy blocks holding nothing maskable (the
prompt) and the last clean block are never attended by a position that carries loss, so they are
dropped; the logits at the positions that carry loss are unchanged (tested).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..diffusion import masked as M
from ..sequence.masks import document_mask
from .data import Rows, step_seed


class Micro(NamedTuple):
    input_ids: torch.Tensor  # (b, L')
    attention_mask: torch.Tensor | None  # (1 or b, 1, L', L') bool
    position_ids: torch.Tensor | None  # (b, L')
    loss: Callable[[torch.Tensor], torch.Tensor]  # logits (b, L', V) -> scalar


def trim_bdlm(batch: M.BDLMBatch, block_size: int, maskable: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Indices into [x_t | x_0] worth computing, and how many of them are noisy positions.

    Kept: noisy blocks from the first block holding a maskable position; clean blocks but the last.
    """
    L = batch.x0.shape[1]
    first = 0
    if maskable is not None and maskable.any():
        first = int(maskable.any(0).nonzero()[0]) // block_size * block_size
    noisy = torch.arange(first, L)
    clean = L + torch.arange(0, max(L - block_size, 0))
    return torch.cat([noisy, clean]), L - first


def _split(n_rows: int, rank: int, world: int, micro: int) -> list[slice]:
    """Row slices of this rank's micro-batches; ValueError when the batch does not divide."""
    if n_rows % world:
        raise ValueError(f"batch_size gives {n_rows} rows per step, which does not divide among {world} processes")
    per_rank = n_rows // world
    micro = micro or per_rank
    if per_rank % micro:
        raise ValueError(f"micro_batch_size ({micro}) must divide the rows per process ({per_rank})")
    start = rank * per_rank
    return [slice(start + i, start + i + micro) for i in range(0, per_rank, micro)]


def bdlm_micros(cfg, rows: Rows, gen, slices, world) -> list[Micro]:
    b = M.bdlm_inputs(rows.input_ids, None, cfg.model.block_size, cfg.model.mask_id, rows.maskable, gen,
                      cfg.complementary)  # input (R, 2L)
    keep, n_noisy = trim_bdlm(b, cfg.model.block_size, rows.maskable)
    first = b.x0.shape[1] - n_noisy
    assert not b.is_masked[:, :first].any(), "a dropped noisy block holds masked tokens"
    x0, is_masked = b.x0[:, first:], b.is_masked[:, first:]  # (R, n_noisy)
    mask = b.attention_mask[keep][:, keep][None, None]  # (1, 1, L', L')
    positions = b.position_ids[keep]  # (L',)
    m = is_masked.sum(1).float()  # (R,) masked tokens per row
    total = m.sqrt().sum() if cfg.reweight else m.sum()
    micros = []
    for s in slices:
        share = (m[s].sqrt().sum() if cfg.reweight else m[s].sum()) / total.clamp(min=1) * world

        def loss(logits, s=s, share=share):
            return M.bdlm_loss(logits[:, :n_noisy], x0[s], is_masked[s], cfg.reweight) * share

        ids = b.input_ids[s][:, keep]
        micros.append(Micro(ids, mask, positions[None].expand(ids.shape[0], -1), loss))
    return micros


def _samples_per_row(answer: torch.Tensor, doc_ids: torch.Tensor | None) -> torch.Tensor:
    """(R,) number of samples with an answer in each row (documents of packed rows)."""
    if doc_ids is None:
        return answer.any(1).float()
    return torch.stack([doc_ids[r][answer[r]].unique().numel() * torch.ones(()) for r in range(len(answer))]).float()


def masked_micros(cfg, rows: Rows, gen, slices, world) -> list[Micro]:
    """LLaDA pretrain / SFT and LLaDA-o: noise the global batch, normalise globally."""
    mid = cfg.model.mask_id
    x0 = M.maybe_crop(rows.input_ids, 0.01, gen) if cfg.objective == "pretrain" else rows.input_ids
    L = x0.shape[1]
    maskable = None if cfg.objective == "pretrain" else rows.maskable
    doc, pos = [None if t is None else t[:, :L] for t in (rows.doc_ids, rows.position_ids)]
    p = M.sample_t(x0.shape[0], generator=gen)  # (R,)
    xt, is_masked = M.forward_mask(x0, p, mid, maskable, gen)
    answer = maskable if maskable is not None else torch.ones_like(x0, dtype=torch.bool)
    if cfg.complementary:
        x0, xt, is_masked = M.with_complement(x0, is_masked, mid, maskable)
        p, answer = torch.cat([p, 1 - p]), torch.cat([answer, answer])
        doc, pos = [None if t is None else torch.cat([t, t]) for t in (doc, pos)]
    if cfg.objective == "lladao":
        _, _, per_pos = M._answer_lengths(answer, is_masked, doc)
        weight_sum = (1.0 / (per_pos[is_masked].sqrt() * M._per_token(p, x0)[is_masked])).sum()
    counts = _samples_per_row(answer, doc) if cfg.objective == "sft" else torch.ones(len(x0))
    micros = []
    for s in slices:
        share = counts[s].sum() / counts.sum().clamp(min=1) * world
        args = (x0[s], is_masked[s], p[s])

        def loss(logits, s=s, share=share, args=args):
            d = None if doc is None else doc[s]
            if cfg.objective == "pretrain":
                return M.pretrain_loss(logits, *args) * share
            if cfg.objective == "sft":
                return M.sft_loss(logits, *args, answer[s], d) * share
            return M.lladao_text_loss(logits, *args, answer[s], d, global_weight_sum=weight_sum)

        mask = None if doc is None else document_mask(doc[s])
        micros.append(Micro(xt[s], mask, None if pos is None else pos[s], loss))
    return micros


def micro_batches(cfg, rows: Rows, step: int, rank: int, world: int) -> list[Micro]:
    """This process's micro-batches of `step` (noise drawn from the step's seed over the global batch)."""
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, 4))
    n_rows = rows.input_ids.shape[0] * (2 if cfg.complementary else 1)
    slices = _split(n_rows, rank, world, cfg.micro_batch_size)
    build = bdlm_micros if cfg.objective == "bdlm" else masked_micros
    return build(cfg, rows, gen, slices, world)
