"""Vision understanding (LLaDA-o / LLaDA-V, docs/published/llada-v.md, lladao.md): a SigLIP encoder, an MLP connector
and a 2D position embedding that put image patches into the backbone's embedding space.

The encoder is `transformers`' SigLIP built from a config dict (never downloaded), with its pooling
head removed and, as in LLaDA-o, its last layer dropped (`drop_last_layer`): the features come from
the second-to-last layer of the published tower. Images of any size up to the config's
`image_size` (multiples of the patch size) are encoded NaViT-style: patch position (row, col) takes
the learned position embedding row * max_side + col, so a small image uses the top-left corner of
the table instead of an interpolated one.

    vit = VisionEncoder(TINY_VIT)
    feats = vit(pixels)                        # (B, h * w, vit_hidden), pixels (B, 3, H, W)
    conn = Connector(vit.hidden_size, 64)      # fc1 -> gelu(tanh) -> fc2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .latents import flat_position_ids

# SigLIP so400m-patch14 at 980 px, the LLaDA-o tower (`vit_config.json`), and a tiny one for tests.
SIGLIP_SO400M = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
    num_channels=3, image_size=980, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)
TINY_VIT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    num_channels=3, image_size=16, patch_size=4, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)
SIGLIP_FIELDS = tuple(SIGLIP_SO400M) + ("attention_dropout",)


def siglip_config(cfg: dict, drop_last_layer: bool = True):
    """A `SiglipVisionConfig` from a dict (unknown keys ignored), without the pooling head."""
    from transformers import SiglipVisionConfig  # imported here: transformers is slow to import

    fields = {k: v for k, v in cfg.items() if k in SIGLIP_FIELDS}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size")
               if k not in fields]
    if missing:
        raise ValueError(f"vision config lacks field(s) {missing}")
    if drop_last_layer:
        if fields["num_hidden_layers"] < 2:
            raise ValueError("vision config needs at least 2 layers when the last one is dropped")
        fields["num_hidden_layers"] -= 1
    return SiglipVisionConfig(**fields, vision_use_head=False)


class VisionEncoder(nn.Module):
    """SigLIP patch embedding + learned positions + encoder (+ post layer norm).

    LLaDA-o applies the post layer norm to its shortened tower; LLaDA-V (LLaVA style) takes the
    second-to-last layer's raw hidden states, so `post_norm=False` there.
    """

    def __init__(self, cfg: dict, drop_last_layer: bool = True, post_norm: bool = True):
        super().__init__()
        from transformers import SiglipVisionModel

        hf = SiglipVisionModel(siglip_config(cfg, drop_last_layer))
        tower = getattr(hf, "vision_model", hf)  # transformers 4 nests the tower, 5 does not
        # keep the parts under stable names of our own, independent of the transformers version
        self.embeddings, self.encoder = tower.embeddings, tower.encoder
        self.post_layernorm = tower.post_layernorm if post_norm else None
        self.patch_size, self.image_size = hf.config.patch_size, hf.config.image_size
        self.max_side = self.image_size // self.patch_size
        self.hidden_size = hf.config.hidden_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patches per side for an image, or a ValueError naming the size that does not fit."""
        p = self.patch_size
        if (height, width) == (self.image_size, self.image_size):
            # the tower's own size always fits: the stride-p convolution drops the last image_size % p
            # pixels, as the published towers do (LLaDA-V: 384 px, patch 14 -> 27 x 27 patches)
            return height // p, width // p
        if height % p or width % p or not (0 < height <= self.image_size and 0 < width <= self.image_size):
            raise ValueError(
                f"image size {height}x{width} must be a positive multiple of the patch size {p}"
                f" and at most {self.image_size}x{self.image_size}"
            )
        return height // p, width // p

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h w, hidden): one batch of same-size images."""
        if pixels.dim() != 4 or pixels.shape[1] != self.embeddings.patch_embedding.in_channels:
            raise ValueError(f"pixels must be (B, {self.embeddings.patch_embedding.in_channels}, H, W), "
                             f"got {tuple(pixels.shape)}")
        h, w = self.grid(pixels.shape[2], pixels.shape[3])
        conv = self.embeddings.patch_embedding
        x = conv(pixels.to(conv.weight.dtype)).flatten(2).transpose(1, 2)  # (B, h w, hidden)
        ids = flat_position_ids(h, w, self.max_side, pixels.device)  # NaViT-style positions
        x = x + self.embeddings.position_embedding(ids)[None]
        x = self.encoder(inputs_embeds=x).last_hidden_state  # (B, h w, hidden)
        return self.post_layernorm(x) if self.post_layernorm is not None else x


class Connector(nn.Module):
    """ViT features -> backbone embeddings: fc1, GELU (tanh), fc2 (LLaDA-o's `connector`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Projector(nn.Module):
    """LLaDA-V's `mlp2x_gelu` projector: Linear, GELU, Linear (`mm_projector.0` / `.2`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
