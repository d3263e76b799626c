"""Pre-training a vision tower to name digits (train/vision.py) and the augmentation it uses."""

import torch

from omnidlm.data.augment import random_affine
from omnidlm.data.digits import digit_images
from omnidlm.data.omni_batches import to_pixels
from omnidlm.models.vision import VisionEncoder
from omnidlm.train.vision import VisionPretrain, pretrain_vision

SMALL_VIT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_channels=3,
                 image_size=16, patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)


def test_random_affine_without_motion_is_the_identity_and_black_stays_black():
    g = torch.Generator().manual_seed(0)
    px = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    assert torch.allclose(random_affine(px, g, 0.0, 0.0, 0.0), px, atol=1e-5)
    moved = random_affine(px, g, 15.0, 0.1, 0.2)
    assert moved.shape == px.shape and not torch.allclose(moved, px, atol=1e-2)
    black = torch.full((2, 3, 16, 16), -1.0)
    assert torch.allclose(random_affine(black, g, 15.0, 0.1, 0.2), black, atol=1e-5)


def test_pretraining_learns_to_name_digits_and_adds_the_extra_loss():
    torch.manual_seed(0)
    images, labels = digit_images("train", 16)
    pixels = to_pixels(images[:300])
    vit = VisionEncoder(SMALL_VIT)
    calls = []

    def extra():
        calls.append(1)
        return vit.embeddings.position_embedding.weight.pow(2).mean() * 0.0

    stats = pretrain_vision(vit, pixels, labels[:300], VisionPretrain(steps=120, batch_size=32, lr=3e-3),
                            heldout=(to_pixels(images[300:400]), labels[300:400]), extra_loss=extra)
    assert len(calls) == 120
    assert stats["train_accuracy"] > 0.5 and stats["heldout_accuracy"] > 0.3  # chance is 0.1
