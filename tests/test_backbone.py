"""The backbone's parts against slow, obvious versions of themselves."""

import pytest
import torch
import torch.nn.functional as F

from omnidlm.config import ModelConfig, preset
from omnidlm.models.backbone import Backbone
from omnidlm.sequence.masks import bdlm_mask, block_causal_mask


def naive_moe(moe, x_TD):
    """Per-token loop over the chosen experts: the definition the grouped dispatch must equal."""
    idx, w = moe.router(x_TD)
    out = torch.zeros_like(x_TD)
    for t in range(x_TD.shape[0]):
        for j in range(idx.shape[1]):
            e = idx[t, j]
            h = F.silu(x_TD[t] @ moe.experts.gate[e].t()) * (x_TD[t] @ moe.experts.up[e].t())
            out[t] += w[t, j] * (h @ moe.experts.down[e].t())
    return out + moe.shared(x_TD)


def test_moe_dispatch_equals_per_token_loop(llada2_tiny):
    moe = llada2_tiny.layers[1].mlp
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        assert torch.allclose(moe(x).reshape(-1, 64), naive_moe(moe, x.reshape(-1, 64)), atol=1e-5)
    assert int(moe.last_expert_load.sum()) == 18 * 4


def test_router_respects_groups_and_bias(llada2_tiny):
    router = llada2_tiny.layers[1].mlp.router
    x = torch.randn(50, 64)
    idx, w = router(x)
    groups = idx // (16 // 4)  # 4 groups of 4 experts
    assert all(len(set(row.tolist())) <= 2 for row in groups)  # topk_group = 2
    assert torch.allclose(w.sum(-1), torch.full((50,), 2.5))  # normalised, then scaled
    biased = router.expert_bias.clone()
    router.expert_bias[3] = 100.0  # selection only: expert 3 always chosen
    try:
        idx2, w2 = router(x)
        assert (idx2 == 3).any(-1).all()
        assert w2.max() <= 2.5
    finally:
        router.expert_bias.copy_(biased)


def test_grouped_query_attention_equals_repeated_heads():
    torch.manual_seed(0)
    gqa = Backbone(ModelConfig(vocab_size=50, hidden_size=32, n_layers=1, n_heads=4, n_kv_heads=2,
                               intermediate_size=64, mask_id=49, eos_id=48))
    mha = Backbone(gqa.config.replace(n_kv_heads=4))
    sd = gqa.state_dict()
    q, k, v = sd["layers.0.attn.qkv.weight"].split([32, 16, 16])
    rep = lambda w: w.view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32)
    sd["layers.0.attn.qkv.weight"] = torch.cat([q, rep(k), rep(v)])
    mha.load_state_dict(sd)
    x = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert torch.allclose(gqa(x).logits, mha(x).logits, atol=1e-5)


def published_rms_norm(norm, x):
    """The published RMSNorm, op by op: float32 statistics, cast back, then the weight."""
    x32 = x.float()
    return norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)).to(x.dtype)


def published_rotate(rotary, x_BHLD, position_ids):
    """The published rotary embedding in its (B, heads, L, D) layout: x * cos + rotate_half(x) * sin."""
    freqs = position_ids.float()[..., None] * rotary.inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    cos, sin = emb.cos(), emb.sin()
    R, half = rotary.rotary_dim, rotary.rotary_dim // 2
    rot, rest = x_BHLD[..., :R].float(), x_BHLD[..., R:]
    out = (rot * cos + torch.cat([-rot[..., half:], rot[..., :half]], dim=-1) * sin).to(x_BHLD.dtype)
    return torch.cat([out, rest], dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_and_rotary_give_the_published_bits(dtype):
    """The one-call RMSNorm and the rotation in the (B, L, heads, D) layout with a pre-signed sin
    (nn/layers.py) must equal the published sequences bit for bit, not merely closely."""
    from omnidlm.nn.layers import RMSNorm, Rotary

    g = torch.Generator().manual_seed(0)
    for dim, rows in ((64, 7), (512, 32), (4096, 3)):
        norm = RMSNorm(dim, 1e-5)
        norm.weight.data = torch.randn(dim, generator=g)
        x = (torch.randn(2, rows, dim, generator=g) * 3).to(dtype)
        assert torch.equal(norm(x), published_rms_norm(norm, x))
    for head_dim, rotary_dim in ((64, 64), (16, 8)):
        rotary = Rotary(rotary_dim, 500000.0)
        x = torch.randn(2, 37, 5, head_dim, generator=g).to(dtype)  # (B, L, heads, D)
        pos = torch.randint(0, 4000, (2, 37), generator=g)
        ours = rotary.rotate(x, *rotary.cos_sin(pos))
        assert torch.equal(ours.transpose(1, 2), published_rotate(rotary, x.transpose(1, 2), pos))


def test_block_causal_mask_matches_prefix_logits(llada2_tiny):
    """Under the block-causal mask a block's logits do not depend on any later block."""
    x = torch.randint(0, 380, (1, 24))
    mask = block_causal_mask(24, 8)[None, None]
    with torch.no_grad():
        full = llada2_tiny(x, attention_mask=mask).logits
        prefix = llada2_tiny(x[:, :16], attention_mask=mask[..., :16, :16]).logits
    assert torch.allclose(full[:, :16], prefix, atol=1e-5)


def test_bdlm_mask_layout():
    m = bdlm_mask(4, 2)  # [x_t (4) | x_0 (4)], blocks of 2
    noisy_to_noisy, noisy_to_clean = m[:4, :4], m[:4, 4:]
    assert torch.equal(noisy_to_noisy, block_causal_mask(4, 2) & block_causal_mask(4, 2).t())
    assert noisy_to_clean.tolist() == [[False] * 4] * 2 + [[True, True, False, False]] * 2
    assert not m[4:, :4].any() and torch.equal(m[4:, 4:], block_causal_mask(4, 2))


def test_key_padding_mask_hides_padded_tokens(llada_tiny):
    x = torch.randint(0, 500, (1, 10))
    pad = torch.ones(1, 10, dtype=torch.long)
    pad[0, :3] = 0
    other = x.clone()
    other[0, :3] = 7  # change only the hidden tokens
    with torch.no_grad():
        a = llada_tiny(x, attention_mask=pad).logits[:, 3:]
        b = llada_tiny(other, attention_mask=pad).logits[:, 3:]
    assert torch.allclose(a, b, atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = Backbone(preset("llada2-tiny"))
    x = torch.randint(0, 380, (2, 16))
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model.train()
        model(x).logits.square().mean().backward()
        grads.append(model.layers[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(*grads, atol=1e-6)


def test_presets_have_published_shapes():
    cfg = preset("llada-8b")
    assert (cfg.hidden_size, cfg.n_layers, cfg.intermediate_size, cfg.vocab_size) == (4096, 32, 12288, 126464)
    mini = preset("llada2-mini")
    assert (mini.n_experts, mini.n_experts_per_tok, mini.rotary_dim, mini.kv_heads) == (256, 8, 64, 4)
    with torch.device("meta"):
        assert 7.5e9 < Backbone(cfg).num_parameters() < 8.5e9
    with pytest.raises(ValueError, match="valid presets"):
        preset("llada-9000")
