"""Masked-diffusion objectives (omnidlm.diffusion.masked) against hand computations on tiny tensors,
plus the properties of the noising: prompt never masked, p_mask ranges, complementary partitions,
weight normalisation, length augmentation."""

import math
import random

import pytest
import torch

from omnidlm.diffusion import masked as M
from omnidlm.sequence.masks import bdlm_mask

LN2, LN10 = math.log(2.0), math.log(10.0)
MASK = 9


def _tiny():
    """Logits (B=2, L=2, V=3) written as log-probabilities, so each CE is a log of a simple number.

    x0 = [[0, 1], [2, 0]];  CE = [[ln 2, ln 4], [ln 2, ln 10]].
    """
    probs = torch.tensor([
        [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]],
        [[0.25, 0.25, 0.5], [0.1, 0.8, 0.1]],
    ])
    x0 = torch.tensor([[0, 1], [2, 0]])
    return probs.log(), x0


def test_hand_ce_values():
    logits, x0 = _tiny()
    every = torch.ones_like(x0, dtype=torch.bool)
    ce = M.masked_ce(logits, x0, every)
    assert torch.allclose(ce, torch.tensor([LN2, 2 * LN2, LN2, LN10]))


def test_pretrain_loss_hand():
    logits, x0 = _tiny()
    is_masked = torch.tensor([[True, True], [False, True]])
    p = torch.tensor([0.5, 0.25])
    # (ln2/0.5 + ln4/0.5 + ln10/0.25) / (B*L = 4)
    expected = (LN2 / 0.5 + 2 * LN2 / 0.5 + LN10 / 0.25) / 4
    assert M.pretrain_loss(logits, x0, is_masked, p).item() == pytest.approx(expected, rel=1e-6)
    # p_mask given per token (B, L) or (B, 1) means the same thing
    assert M.pretrain_loss(logits, x0, is_masked, p[:, None].expand(2, 2)).item() == pytest.approx(expected, rel=1e-6)
    assert M.pretrain_loss(logits, x0, is_masked, p[:, None]).item() == pytest.approx(expected, rel=1e-6)


def test_pretrain_loss_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    x0 = torch.randint(0, 7, (3, 5), generator=g)
    is_masked = torch.rand(3, 5, generator=g) < 0.5
    p = torch.rand(3, generator=g) * 0.9 + 0.1
    total = 0.0
    for b in range(3):
        for i in range(5):
            if is_masked[b, i]:
                total += -torch.log_softmax(logits[b, i], -1)[x0[b, i]].item() / p[b].item()
    assert M.pretrain_loss(logits, x0, is_masked, p).item() == pytest.approx(total / 15, rel=1e-5)


def test_sft_loss_hand():
    logits, x0 = _tiny()
    answer = torch.tensor([[False, True], [True, True]])  # answer lengths 1 and 2
    is_masked = torch.tensor([[False, True], [False, True]])
    p = torch.tensor([0.5, 0.25])
    # row 0: (ln4 / 0.5) / 1;  row 1: (ln10 / 0.25) / 2;  mean over the 2 rows
    expected = ((2 * LN2 / 0.5) / 1 + (LN10 / 0.25) / 2) / 2
    assert M.sft_loss(logits, x0, is_masked, p, answer).item() == pytest.approx(expected, rel=1e-6)


def test_sft_loss_rejects_masked_prompt():
    logits, x0 = _tiny()
    answer = torch.tensor([[False, True], [True, True]])
    is_masked = torch.tensor([[True, True], [False, False]])  # (0, 0) is prompt
    with pytest.raises(ValueError, match="prompt must never be masked"):
        M.sft_loss(logits, x0, is_masked, torch.tensor([0.5, 0.5]), answer)


def test_sft_loss_packed_documents_equal_separate_rows():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, generator=g)
    x0 = torch.randint(0, 5, (2, 4), generator=g)
    answer = torch.tensor([[False, True, True, True], [False, False, True, True]])
    is_masked = torch.tensor([[False, True, False, True], [False, False, True, True]])
    p = torch.tensor([0.3, 0.6])
    separate = M.sft_loss(logits, x0, is_masked, p, answer)
    # the same two samples side by side in one packed row, p_mask per token
    packed = M.sft_loss(logits.reshape(1, 8, 5), x0.reshape(1, 8), is_masked.reshape(1, 8),
                        p[:, None].expand(2, 4).reshape(1, 8), answer.reshape(1, 8),
                        doc_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]))
    assert packed.item() == pytest.approx(separate.item(), rel=1e-6)


def test_lladao_text_loss_hand():
    logits, x0 = _tiny()
    answer = torch.tensor([[False, True], [True, True]])
    is_masked = torch.tensor([[False, True], [False, True]])
    p = torch.tensor([0.5, 0.25])
    # weights 1/(sqrt(answer_len) p): row 0 -> 1/(1*0.5) = 2, row 1 -> 1/(sqrt2*0.25) = 2 sqrt2
    w0, w1 = 2.0, 2 * math.sqrt(2)
    expected = (w0 * 2 * LN2 + w1 * LN10) / (w0 + w1)
    assert M.lladao_text_loss(logits, x0, is_masked, p, answer).item() == pytest.approx(expected, rel=1e-6)
    # a global sum from other ranks / micro-batches replaces the local one
    got = M.lladao_text_loss(logits, x0, is_masked, p, answer, global_weight_sum=10.0)
    assert got.item() == pytest.approx((w0 * 2 * LN2 + w1 * LN10) / 10.0, rel=1e-6)


def test_lladao_text_loss_all_reduce_single_rank(tmp_path):
    import torch.distributed as dist
    logits, x0 = _tiny()
    answer = torch.tensor([[False, True], [True, True]])
    is_masked = torch.tensor([[False, True], [False, True]])
    p = torch.tensor([0.5, 0.25])
    local = M.lladao_text_loss(logits, x0, is_masked, p, answer)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        reduced = M.lladao_text_loss(logits, x0, is_masked, p, answer)
    finally:
        dist.destroy_process_group()
    assert reduced.item() == pytest.approx(local.item(), rel=1e-6)


def test_bdlm_loss_hand_and_reweighting():
    logits, x0 = _tiny()
    is_masked = torch.tensor([[True, True], [False, True]])
    # plain mean over the 3 masked tokens, no 1/t
    assert M.bdlm_loss(logits, x0, is_masked).item() == pytest.approx((LN2 + 2 * LN2 + LN10) / 3, rel=1e-6)
    # Mask Token Reweighting: row 0 has 2 masked (weight 1/sqrt2 each), row 1 has 1 (weight 1)
    expected = ((LN2 + 2 * LN2) / math.sqrt(2) + LN10) / (2 / math.sqrt(2) + 1)
    assert M.bdlm_loss(logits, x0, is_masked, reweight=True).item() == pytest.approx(expected, rel=1e-6)


def test_mask_token_weights_normalised():
    is_masked = torch.tensor([[True, True, True, True], [True, False, False, False], [False] * 4])
    w = M.mask_token_weights(is_masked)
    assert w.sum().item() == pytest.approx(1.0)
    assert (w[~is_masked] == 0).all()
    # per sample 1/sqrt(m): a token of the 4-masked row weighs half a token of the 1-masked row
    assert w[0, 0].item() == pytest.approx(w[1, 0].item() / 2)
    # equal counts per sample -> the plain mean
    even = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.allclose(M.mask_token_weights(even)[even], torch.full((4,), 0.25))


def test_losses_backward_even_when_nothing_masked():
    logits, x0 = _tiny()
    logits.requires_grad_(True)
    none = torch.zeros_like(x0, dtype=torch.bool)
    answer = torch.ones_like(none)
    p = torch.tensor([0.5, 0.5])
    for loss in (M.pretrain_loss(logits, x0, none, p), M.sft_loss(logits, x0, none, p, answer),
                 M.lladao_text_loss(logits, x0, none, p, answer), M.bdlm_loss(logits, x0, none)):
        assert loss.item() == 0.0
        loss.backward()
        assert logits.grad is not None


def test_sample_t_range():
    g = torch.Generator().manual_seed(0)
    p = M.sample_t(20000, eps=1e-3, generator=g)
    assert p.shape == (20000,)
    assert p.min() >= 1e-3 and p.max() <= 1.0
    assert p.mean().item() == pytest.approx(0.5, abs=0.02)
    t = M.sample_bdlm_t(20000, generator=g)
    assert t.min() >= 0.3 and t.max() <= 0.8
    assert t.mean().item() == pytest.approx(0.55, abs=0.01)


def test_forward_mask_prompt_never_masked_and_rate():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 8, (4, 2000), generator=g)
    maskable = torch.zeros(4, 2000, dtype=torch.bool)
    maskable[:, 500:] = True  # the first 500 positions are the prompt
    p = torch.tensor([0.1, 0.5, 0.9, 1.0])
    xt, is_masked = M.forward_mask(x0, p, MASK, maskable, generator=g)
    assert not is_masked[:, :500].any()
    assert torch.equal(xt[:, :500], x0[:, :500])
    assert (xt[is_masked] == MASK).all() and torch.equal(xt[~is_masked], x0[~is_masked])
    rate = is_masked[:, 500:].float().mean(1)
    assert torch.allclose(rate, p, atol=0.04)
    assert is_masked[3, 500:].all()  # p_mask = 1 masks every maskable token


def test_forward_mask_deterministic_with_generator():
    x0 = torch.arange(50).view(2, 25)
    a = M.forward_mask(x0, torch.tensor([0.5, 0.5]), MASK, generator=torch.Generator().manual_seed(3))
    b = M.forward_mask(x0, torch.tensor([0.5, 0.5]), MASK, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_complementary_masks_partition_maskable():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 8, (3, 40), generator=g)
    maskable = torch.rand(3, 40, generator=g) < 0.7
    _, is_masked = M.forward_mask(x0, torch.tensor([0.2, 0.5, 0.8]), MASK, maskable, generator=g)
    comp = M.complementary_mask(is_masked, maskable)
    assert not (comp & is_masked).any()
    assert torch.equal(comp | is_masked, maskable)
    x0_2, xt_2, m_2 = M.with_complement(x0, is_masked, MASK, maskable)
    assert x0_2.shape == (6, 40) and torch.equal(m_2[3:], comp)
    assert torch.equal(xt_2, torch.where(m_2, torch.full_like(x0_2, MASK), x0_2))


def test_bdlm_inputs_layout():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 8, (2, 8), generator=g)
    maskable = torch.zeros(2, 8, dtype=torch.bool)
    maskable[:, 3:] = True
    batch = M.bdlm_inputs(x0, torch.tensor([0.5, 0.8]), block_size=4, mask_id=MASK, maskable=maskable, generator=g)
    assert batch.input_ids.shape == (2, 16)
    assert torch.equal(batch.input_ids[:, 8:], x0)  # the clean half
    assert torch.equal(batch.input_ids[:, :8], M.apply_mask(x0, batch.is_masked, MASK))
    assert not batch.is_masked[:, :3].any()
    assert torch.equal(batch.position_ids, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 2))
    assert torch.equal(batch.attention_mask, bdlm_mask(8, 4))
    # complementary doubles the batch; together the copies mask every maskable token once
    both = M.bdlm_inputs(x0, None, 4, MASK, maskable, generator=g, complementary=True)
    assert both.input_ids.shape == (4, 16) and both.x0.shape == (4, 8)
    assert torch.equal(both.is_masked[:2] ^ both.is_masked[2:], maskable)


def test_maybe_crop():
    x0 = torch.arange(20).view(2, 10)
    assert M.maybe_crop(x0, prob=0.0) is x0
    g = torch.Generator().manual_seed(0)
    lengths = {M.maybe_crop(x0, prob=1.0, generator=g).shape[1] for _ in range(200)}
    assert lengths <= set(range(1, 11)) and len(lengths) > 5
    cropped = M.maybe_crop(x0, prob=1.0, generator=g)
    assert torch.equal(cropped, x0[:, :cropped.shape[1]])


EOS = 0


def test_adaptive_length_cases():
    rng = random.Random(0)
    content = list(range(1, 21))  # 20 tokens, > 16
    assert M.adaptive_length(content, EOS, rng, p_ext=0.0, p_trunc=0.0) == content + [EOS]
    assert M.adaptive_length(content + [EOS, EOS], EOS, rng, p_ext=0.0, p_trunc=0.0) == content + [EOS]
    for _ in range(50):
        ext = M.adaptive_length(content, EOS, rng, p_ext=1.0, p_trunc=0.0)
        assert ext[:20] == content and set(ext[20:]) == {EOS} and 2 <= len(ext) - 20 <= 21
        cut = M.adaptive_length(content, EOS, rng, p_ext=0.0, p_trunc=1.0)
        assert 1 <= len(cut) <= 19 and cut == content[:len(cut)] and EOS not in cut
    short = list(range(1, 17))  # 16 tokens: never truncated
    assert M.adaptive_length(short, EOS, rng, p_ext=0.0, p_trunc=1.0) == short + [EOS]


def test_adaptive_length_frequencies():
    rng = random.Random(1)
    content = list(range(1, 31))
    outs = [M.adaptive_length(content, EOS, rng) for _ in range(4000)]
    ext = sum(len(o) > 31 for o in outs) / 4000
    trunc = sum(o[-1] != EOS for o in outs) / 4000
    assert ext == pytest.approx(0.1, abs=0.02) and trunc == pytest.approx(0.1, abs=0.02)
    extra = [len(o) - 31 for o in outs if len(o) > 31]
    assert min(extra) >= 1 and max(extra) <= 30
