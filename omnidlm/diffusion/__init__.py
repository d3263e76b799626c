"""Diffusion processes: masked discrete diffusion over tokens (`masked`)."""

from .masked import (
    BDLMBatch,
    adaptive_length,
    apply_mask,
    bdlm_inputs,
    bdlm_loss,
    complementary_mask,
    forward_mask,
    lladao_text_loss,
    mask_token_weights,
    masked_ce,
    maybe_crop,
    pretrain_loss,
    sample_bdlm_t,
    sample_t,
    sft_loss,
    with_complement,
)

__all__ = [
    "BDLMBatch", "adaptive_length", "apply_mask", "bdlm_inputs", "bdlm_loss", "complementary_mask",
    "forward_mask", "lladao_text_loss", "mask_token_weights", "masked_ce", "maybe_crop", "pretrain_loss",
    "sample_bdlm_t", "sample_t", "sft_loss", "with_complement",
]
