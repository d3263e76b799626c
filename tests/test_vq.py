"""The SigLIP-VQ image tokenizer (models/vq.py, train/vq.py) on a tiny config: nearest codes against
a brute-force loop, straight-through gradients, the commitment loss by hand, usage statistics,
state-dict round trip, bad pixel shapes, and a short understanding-objective training run."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from omnidlm.models.vq import TINY_VQ, SiglipVQ
from omnidlm.train.vq import TokenizerTrain, tokenize_digits, train_tokenizer


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    return SiglipVQ(TINY_VQ)


def test_nearest_code_matches_brute_force(vq):
    z = F.normalize(torch.randn(3, 5, TINY_VQ["code_dim"], generator=torch.Generator().manual_seed(1)), dim=-1)
    z_q, codes, _ = vq.quantize(z)
    e = vq.codebook.weight.detach()
    for b in range(3):
        for n in range(5):
            cos = [float(z[b, n] @ e[k] / e[k].norm()) for k in range(len(e))]
            assert int(codes[b, n]) == max(range(len(e)), key=cos.__getitem__)
            assert torch.allclose(z_q[b, n], e[codes[b, n]] / e[codes[b, n]].norm(), atol=1e-6)


def test_shapes_and_embed(vq):
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = vq.encode(pixels)
    assert codes.shape == (2, 4, 4) and codes.dtype == torch.long
    z = vq.features(pixels)
    assert z.shape == (2, 16, TINY_VQ["code_dim"]) and torch.allclose(z.norm(dim=-1), torch.ones(2, 16))
    assert torch.equal(vq.quantize(z)[1].view(2, 4, 4), codes)
    assert torch.allclose(vq.embed(codes), vq.quantize(z)[0], atol=1e-6)
    assert vq.encode(pixels[:, :, :8, :12]).shape == (2, 2, 3)  # smaller images use fewer tokens


def test_straight_through_gradient_reaches_the_vit(vq):
    vq.zero_grad()
    z_q, _, losses = vq(torch.rand(2, 3, 16, 16) * 2 - 1)
    z_q.pow(3).sum().backward()  # a task loss on the quantized features only
    assert vq.vit.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert vq.proj.weight.grad.abs().sum() > 0
    vq.zero_grad()
    losses["codebook"].backward()  # the codebook loss moves only the codebook
    assert vq.codebook.weight.grad.abs().sum() > 0 and vq.proj.weight.grad is None
    vq.zero_grad()


def test_commitment_loss_by_hand():
    torch.manual_seed(0)
    vq = SiglipVQ({**TINY_VQ, "codebook_size": 2, "code_dim": 2, "beta": 0.5})
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # unit codes (1,0), (0,1)
    s = 1 / math.sqrt(2)
    z = torch.tensor([[[0.8, 0.6], [0.6, 0.8], [s, -s]]])  # nearest: code 0, code 1, code 0
    z_q, codes, losses = vq.quantize(z)
    assert codes.tolist() == [[0, 1, 0]]
    # squared distances to the chosen unit codes, averaged over the 3 x 2 entries
    sq = (0.2 ** 2 + 0.6 ** 2) + (0.6 ** 2 + 0.2 ** 2) + ((1 - s) ** 2 + s ** 2)
    assert losses["commit"].item() == pytest.approx(0.5 * sq / 6, rel=1e-5)
    assert losses["codebook"].item() == pytest.approx(sq / 6, rel=1e-5)


def test_usage_of_a_known_code_list(vq):
    u = vq.usage(torch.tensor([[0, 0, 3, 5]]))
    assert u["used"] == 3 and u["fraction"] == 3 / TINY_VQ["codebook_size"]
    assert u["perplexity"] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert vq.usage(torch.arange(16))["perplexity"] == pytest.approx(16)


def test_state_dict_round_trip_gives_identical_codes(vq):
    pixels = torch.rand(3, 3, 16, 16) * 2 - 1
    torch.manual_seed(123)  # a differently initialised copy
    copy = SiglipVQ.from_config(vq.config)
    copy.load_state_dict(vq.state_dict())
    assert torch.equal(copy.encode(pixels), vq.encode(pixels))
    assert copy.config == TINY_VQ


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 1, 16, 16), (2, 3, 16, 10), (2, 3, 32, 32)])
def test_bad_pixel_shapes_raise_naming_the_shape(vq, shape):
    named = str(shape) if len(shape) != 4 or shape[1] != 3 else f"{shape[2]}x{shape[3]}"
    for method in (vq.encode, vq.features):
        with pytest.raises(ValueError, match=re.escape(named)):
            method(torch.zeros(shape))


def test_bad_codes_raise(vq):
    with pytest.raises(ValueError, match="codes must lie"):
        vq.embed(torch.tensor([[0, 16]]))


def test_short_training_lowers_the_loss_and_restarts_dead_codes():
    torch.manual_seed(0)
    vq = SiglipVQ(TINY_VQ)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 2
    pixels = -torch.ones(32, 3, 16, 16)
    pixels[labels == 1, :, 4:12, 6:10] = 1  # class 1: a bright bar; class 0: black
    pixels += 0.1 * torch.randn(pixels.shape, generator=g)
    losses, restarts = [], []

    def record(loop, info):  # a loop hook: runs after the restart of the same step
        losses.append(info["loss"])
        restarts.append(info.get("restarted", 0))

    cfg = TokenizerTrain(steps=100, batch_size=16, lr=3e-3, restart_every=10, degrees=0, zoom=0, translate=0)
    stats = train_tokenizer(vq, pixels, labels, cfg, heldout=(pixels[:8], labels[:8]), hooks=[record])
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])  # about 0.5 on seeds 0-4
    assert stats["train_accuracy"] == 1.0 and stats["heldout_accuracy"] == 1.0
    assert sum(restarts) == stats["restarted"] > 0  # random codes start dead and are moved
    assert 1 <= stats["usage"]["used"] <= 16 and stats["seconds"] > 0
    assert tokenize_digits(vq, pixels, batch=5).shape == (32, 4, 4)
