"""The diffusion decoder of LLaDA2.0-Uni (docs/published/uni.md): discrete image tokens -> pixels at 2x.

The tokenizer (SigLIP-VQ) turns an image into an h x w grid of codes; this decoder draws the image
back from the codes at `upscale` (2) times the tokenizer's resolution:

    codes (B, h, w) -> embedding + FFN -> condition tokens (B, h w, D)
    [condition tokens | noisy latent patch tokens] -> Transformer (full attention, adaLN-Zero on the
    timestep) -> velocity of the latent patches -> Euler ODE (time shift 6) -> frozen VAE -> pixels

- One object goes codes -> pixels: it holds the VAE (`self.vae`, a diffusers `AutoencoderKL`, frozen).
- Positions: frozen 2D sin-cos in half-latent-token units, so a code sits at the centre of the
  r x r latent tokens it covers (r = latent tokens per code side); a learned type embedding tells
  condition tokens from latent tokens. The timestep embedding plus the mean condition token drive
  the adaLN modulation of every block (DiT), the condition tokens are also attended to.
- Classifier-free guidance: a learned null condition replaces the condition tokens (`codes=None`,
  or per sample with `keep`); training drops the condition with probability 0.1.
- The network knows nothing of noise schedules beyond `velocity`; `sampling.image.decoder_sample`
  runs `diffusion.flow`'s Euler grid. Training and distillation live in `omnidlm/train/uni_decoder.py`.

    dec = UniDecoder(DIGITS_DECODER)
    v = dec.velocity(z_t, t, codes)                   # (B, 4, 8, 8) for codes (B, 2, 2)
    images = decoder_sample(dec, codes, steps=8, cfg_scale=1)  # sampling/image.py: (B, 32, 32) in [0, 1]
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .latents import TimestepEmbedder, build_vae, decode_latents, patchify, sincos_2d, unpatchify, vae_downsample

# 32x32 digits: AutoencoderKL with 3 down blocks (downsample 4) -> 8x8x4 latents, patch 2 -> 16 tokens.
DIGITS_DECODER_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 32], layers_per_block=1, norm_num_groups=8, act_fn="silu",
    sample_size=32, scaling_factor=1.0, shift_factor=0.0,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
)

# The shipped digits decoder: 16x16 tokenizer input, 2x2 codes of 8x8 pixels, 32x32 output.
DIGITS_DECODER = dict(
    codebook_size=128, grid=2, code_pixels=8, upscale=2,  # codebook: models/vq.py DIGITS_VQ
    hidden_size=96, n_layers=3, n_heads=4, mlp_ratio=2,
    latent_channels=4, latent_patch=2, vae=DIGITS_DECODER_VAE,
    time_shift=6.0, cfg_scale=2.0, steps=40,  # the teacher's sampler; a distilled student: 8 steps, cfg 1
)

TIME_SCALE = 1000.0  # t in [0, 1] is embedded as 1000 t, so the sinusoid frequencies resolve it (DiT)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift  # x (B, L, D), shift / scale (B, 1, D)


class Block(nn.Module):
    """Pre-norm Transformer block with full attention, modulated by c (adaLN-Zero: starts as identity)."""

    def __init__(self, hidden: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * hidden, hidden))
        self.ada = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def attention(self, x_BLD: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        q, k, v = self.qkv(x_BLD).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, D/H)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))

    def forward(self, x_BLD: torch.Tensor, c_BD: torch.Tensor) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.ada(F.silu(c_BD))[:, None].chunk(6, dim=-1)  # each (B, 1, D)
        x_BLD = x_BLD + g1 * self.attention(_modulate(self.norm1(x_BLD), b1, s1))
        return x_BLD + g2 * self.mlp(_modulate(self.norm2(x_BLD), b2, s2))


class UniDecoder(nn.Module):
    """codes (B, grid, grid) -> images (B, S, S), S = grid * code_pixels * upscale; see the module doc."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        c = self.config
        D, p = c["hidden_size"], c["latent_patch"]
        if c["vae"]["latent_channels"] != c["latent_channels"]:
            raise ValueError(f"latent_channels {c['latent_channels']} != the VAE's {c['vae']['latent_channels']}")
        self.grid = c["grid"]
        self.image_size = c["grid"] * c["code_pixels"] * c.get("upscale", 2)  # output side in pixels
        f = vae_downsample(c["vae"])
        if self.image_size % (f * p * c["grid"]):
            raise ValueError(f"an output of {self.image_size} px does not split into {c['grid']} codes x "
                             f"VAE downsample {f} x latent patch {p}")
        self.latent_side = self.image_size // f  # latent cells per side
        self.token_side = self.latent_side // p  # latent tokens per side
        self.per_code = self.token_side // c["grid"]  # r: latent tokens per code side
        self.vae = build_vae(c["vae"]).requires_grad_(False).eval()
        # condition: code embedding + FFN, and the learned null condition for CFG
        self.code_embed = nn.Embedding(c["codebook_size"], D)
        M = c.get("mlp_ratio", 4) * D
        self.cond_ffn = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, M), nn.GELU(approximate="tanh"), nn.Linear(M, D))
        self.null_cond = nn.Parameter(torch.randn(D) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(2, D) * 0.02)  # 0: condition token, 1: latent token
        self.patch_in = nn.Linear(p * p * c["latent_channels"], D)
        self.time_embed = TimestepEmbedder(D)
        self.blocks = nn.ModuleList(Block(D, c["n_heads"], c.get("mlp_ratio", 4)) for _ in range(c["n_layers"]))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(D, 2 * D)
        self.patch_out = nn.Linear(D, p * p * c["latent_channels"])
        for layer in (self.ada_out, self.patch_out):  # the network starts by predicting v = 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("cond_pos", self._positions(True), persistent=False)  # (grid^2, D)
        self.register_buffer("latent_pos", self._positions(False), persistent=False)  # (token_side^2, D)

    def _positions(self, codes: bool) -> torch.Tensor:
        """Sin-cos positions in half-token units: latent token (a, b) at (2a, 2b); code (i, j) at the
        centre of the r x r tokens it covers, (2 i r + r - 1, 2 j r + r - 1)."""
        side = 2 * self.token_side
        table = sincos_2d(self.config["hidden_size"], side)  # (side^2, D)
        if codes:
            rows = 2 * torch.arange(self.grid) * self.per_code + self.per_code - 1
        else:
            rows = 2 * torch.arange(self.token_side)
        ids = (rows[:, None] * side + rows[None, :]).reshape(-1)
        return table[ids]

    def train(self, mode: bool = True) -> "UniDecoder":
        super().train(mode)
        self.vae.eval()  # the VAE stays frozen
        return self

    # --- inputs ---------------------------------------------------------------------------------------

    def check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (self.grid, self.grid):
            raise ValueError(f"codes must be (B, {self.grid}, {self.grid}), got {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"codes must be integer token ids, got {codes.dtype}")
        n = self.config["codebook_size"]
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n):
            raise ValueError(f"codes must be in [0, {n}), got values in [{int(codes.min())}, {int(codes.max())}]")

    def condition(self, codes: torch.Tensor | None, batch: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Condition tokens (B, grid^2, D); the null condition where codes is None or keep is False."""
        D = self.config["hidden_size"]
        null = self.null_cond.expand(batch, self.grid ** 2, D)
        if codes is None:
            return null
        self.check_codes(codes)
        e = self.code_embed(codes.reshape(batch, -1))  # (B, grid^2, D)
        cond = e + self.cond_ffn(e)
        if keep is not None:
            cond = torch.where(keep.view(-1, 1, 1), cond, null)
        return cond

    # --- the network ----------------------------------------------------------------------------------

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor | float, codes: torch.Tensor | None,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted velocity eps - x0 for latents x_t (B, C, h, w) at times t (B,) or a float."""
        B = x_t.shape[0]
        if tuple(x_t.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents must be (B, {', '.join(map(str, self.latent_shape))}), got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).expand(B)  # (B,)
        cond = self.condition(codes, B, keep) + self.cond_pos + self.type_embed[0]  # (B, G, D)
        lat = self.patch_in(patchify(x_t, self.config["latent_patch"]))  # (B, N, D)
        lat = lat + self.latent_pos + self.type_embed[1]
        c = self.time_embed(t * TIME_SCALE) + cond.mean(1)  # (B, D)
        x = torch.cat([cond, lat], dim=1)  # (B, G + N, D)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(F.silu(c))[:, None].chunk(2, dim=-1)
        out = self.patch_out(_modulate(self.norm_out(x[:, cond.shape[1]:]), shift, scale))  # (B, N, p p C)
        return unpatchify(out, self.token_side, self.token_side, self.config["latent_patch"]).to(x_t.dtype)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.config["latent_channels"], self.latent_side, self.latent_side)

    # --- decoding (the samplers are in sampling/image.py: a model never samples) ---------------------

    @torch.no_grad()
    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> grayscale images (B, S, S) in [0, 1] (the mean of the 3 channels)."""
        pixels = decode_latents(self.vae, latents)  # (B, 3, S, S) about [-1, 1]
        return ((pixels.float().mean(1) + 1) / 2).clamp(0, 1)

    # --- the VAE --------------------------------------------------------------------------------------

    def load_vae(self, vae) -> None:
        """Copy a trained AutoencoderKL's weights and latent scale / shift (kept in `config['vae']`)."""
        self.vae.load_state_dict(vae.state_dict())
        scale, shift = float(vae.config.scaling_factor), float(vae.config.shift_factor or 0.0)
        self.vae.register_to_config(scaling_factor=scale, shift_factor=shift)
        self.config["vae"] = {**self.config["vae"], "scaling_factor": scale, "shift_factor": shift}

    def num_parameters(self, trainable: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
