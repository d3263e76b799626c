"""The LLaDA-o omni model (docs/published/lladao.md): text, ViT features and VAE latents in one sequence,
through a Mixture-of-Transformers backbone, out as text logits and latent velocities.

Pure architecture: the model embeds what it is given (noisy latents and their times come from
`omnidlm/diffusion/flow.py`, masked text from `omnidlm/diffusion/masked.py`) and knows nothing of
noise, losses or sampling. Parts and their published names:

    language_model  MoTBackbone (understanding + generation experts)
    vit, connector, vit_pos_embed                      image understanding (absent: text only)
    vae, vae2llm, llm2vae, time_embedder, latent_pos_embed    image generation (absent: no drawing)

A LLaDA-V model is the same class with no generation part, LLaDA-V's projector and its
`image_newline` (merged into image features by `models/anyres.py`).

    model = LLaDAO(lladao_preset("lladao-tiny"))
    lay = pack([[[text(4), vit_image(16), text(3), vae_image(4, noisy=True)]]])
    out = model(ids, lay, vit_images=[img], latents=[z_t], timesteps=torch.tensor([0.7]))
    out.logits    # (B, L, V) at every position (read the text ones)
    out.velocity  # list of (C, h, w), one per VAE image, in layout order
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ModelConfig, build_dataclass, preset
from ..sequence.segments import TEXT, VAE, VIT, Layout
from .latents import TINY_VAE, PositionEmbedding, TimestepEmbedder, build_vae, flat_position_ids, patchify, unpatchify
from .mot import MoTBackbone
from .vision import TINY_VIT, Connector, Projector, VisionEncoder


@dataclass
class LLaDAOConfig:
    """The omni model: a dense language config plus optional vision (SigLIP) and VAE configs."""

    llm: ModelConfig
    vit: dict | None = None  # SigLIP config as published (the full tower; the last layer is dropped)
    vae: dict | None = None  # diffusers AutoencoderKL config; None: no generation expert
    latent_patch_size: int = 2
    max_latent_size: int = 32  # latent patches per side in the latent position table
    vit_max_patches_per_side: int = 70  # ViT patches per side in the connector's position table
    vit_drop_last_layer: bool = True
    vit_post_norm: bool = True
    projector: str = "connector"  # connector (LLaDA-o, + 2D position embedding) | mlp2x_gelu (LLaDA-V)
    image_newline: bool = False  # LLaDA-V's learned end-of-row embedding (`spatial_unpad` image features)
    freeze_und: bool = False  # train only the generation expert (and the generation-side modules)
    extra: dict = field(default_factory=dict)  # fields of published configs we carry but do not use

    def __post_init__(self):
        if self.projector not in ("connector", "mlp2x_gelu"):
            raise ValueError(f"config field 'projector' must be 'connector' or 'mlp2x_gelu', got {self.projector!r}")
        if self.latent_patch_size < 1 or self.max_latent_size < 1:
            raise ValueError("config fields 'latent_patch_size' and 'max_latent_size' must be positive")

    @property
    def generation(self) -> bool:
        return self.vae is not None

    @property
    def latent_channels(self) -> int:
        return self.vae["latent_channels"]

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size ** 2 * self.latent_channels

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "llm": self.llm.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "LLaDAOConfig":
        return build_dataclass(cls, {**data, "llm": ModelConfig.from_dict(data["llm"])}, "LLaDA-o config")


LLADAO_PRESETS: dict[str, dict] = {
    # 16x16 images: ViT 4x4 patches of 4 px; VAE latents 8x8x4 -> 4x4 tokens of patch 2
    "lladao-tiny": dict(
        llm=dict(preset="llada-tiny", qk_norm=True, n_layers=2),
        vit=TINY_VIT, vae=TINY_VAE, max_latent_size=8, vit_max_patches_per_side=4,
    ),
}


def lladao_preset(name: str, **overrides) -> LLaDAOConfig:
    """A named LLaDA-o preset; an unknown name lists the valid ones."""
    if name not in LLADAO_PRESETS:
        raise ValueError(f"unknown LLaDA-o preset {name!r}; valid presets: {sorted(LLADAO_PRESETS)}")
    fields = dict(LLADAO_PRESETS[name])
    llm = dict(fields.pop("llm"))
    fields["llm"] = preset(llm.pop("preset"), **llm)
    return LLaDAOConfig(**{**fields, **overrides})


@dataclass
class OmniOutput:
    logits: torch.Tensor | None  # (B, L, V) float32
    velocity: list[torch.Tensor]  # one (C, h, w) per VAE image, layout order
    hidden: torch.Tensor | None = None  # (B, L, D) after the routed final norm


class LLaDAO(nn.Module):
    def __init__(self, cfg: LLaDAOConfig):
        super().__init__()
        self.config = cfg
        D = cfg.llm.hidden_size
        self.language_model = MoTBackbone(cfg.llm, generation=cfg.generation)
        if cfg.vit is not None:
            self.vit = VisionEncoder(cfg.vit, cfg.vit_drop_last_layer, cfg.vit_post_norm)
            if cfg.projector == "connector":
                self.connector = Connector(self.vit.hidden_size, D)
                self.vit_pos_embed = PositionEmbedding(cfg.vit_max_patches_per_side, D)
            else:
                self.mm_projector = Projector(self.vit.hidden_size, D)
        if cfg.image_newline:  # randn / sqrt(D), as LLaDA-V initialises it
            self.image_newline = nn.Parameter(torch.randn(D) / D ** 0.5)
        if cfg.generation:
            self.vae = build_vae(cfg.vae).requires_grad_(False).eval()  # frozen, as in LLaDA-o
            self.vae2llm = nn.Linear(cfg.patch_latent_dim, D)
            self.llm2vae = nn.Linear(D, cfg.patch_latent_dim)
            self.time_embedder = TimestepEmbedder(D)
            self.latent_pos_embed = PositionEmbedding(cfg.max_latent_size, D)
            # zero output map: a fresh model predicts zero velocity and does not disturb the text side
            nn.init.zeros_(self.llm2vae.weight)
            nn.init.zeros_(self.llm2vae.bias)
        if cfg.freeze_und:
            self.freeze_understanding()

    def freeze_understanding(self, frozen: bool = True) -> None:
        """Train only the generation side: freezes the und expert, embeddings, head and vision parts."""
        self.language_model.freeze_understanding(frozen)
        for name in ("vit", "connector", "mm_projector", "image_newline"):
            if hasattr(self, name):
                getattr(self, name).requires_grad_(not frozen)

    @property
    def can_see(self) -> bool:
        return hasattr(self, "vit")

    @property
    def can_draw(self) -> bool:
        return self.config.generation

    # --- embedding of each modality ---------------------------------------------------------------

    def embed_images(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """ViT images (3, H, W) -> backbone embeddings (h w, D) each, connector and 2D positions added."""
        if not self.can_see:
            raise ValueError("this model has no vision encoder, but the input holds ViT images")
        # images of one size go through the ViT as one batch (a training batch holds many digits)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(img.shape), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(images)
        for shape, idx in groups.items():
            feats = self.vit(torch.stack([images[i] for i in idx]))  # (n, h w, Dv)
            if self.config.projector == "mlp2x_gelu":
                emb = self.mm_projector(feats)
            else:
                h, w = self.vit.grid(shape[-2], shape[-1])
                ids = flat_position_ids(h, w, self.config.vit_max_patches_per_side, feats.device)
                emb = self.connector(feats) + self.vit_pos_embed(ids)[None]  # (n, h w, D)
            for j, i in enumerate(idx):
                out[i] = emb[j]
        return out

    def embed_latents(self, latents: list[torch.Tensor], t: torch.Tensor) -> list[torch.Tensor]:
        """Latent images (C, h, w) at times t (N,) -> embeddings (h w / p^2, D) each."""
        if not self.can_draw:
            raise ValueError("this model has no generation expert, but the input holds VAE latents")
        if len(t) != len(latents):
            raise ValueError(f"got {len(latents)} latent images but {len(t)} timesteps")
        p, out = self.config.latent_patch_size, []
        for z, ti in zip(latents, t):
            self._check_latent(z)
            tokens = patchify(z[None], p)[0]  # (n, p p C)
            ids = flat_position_ids(z.shape[1] // p, z.shape[2] // p, self.config.max_latent_size, z.device)
            emb = self.vae2llm(tokens.to(self.vae2llm.weight.dtype))  # (n, D)
            out.append(emb + self.time_embedder(ti.reshape(1)) + self.latent_pos_embed(ids))
        return out

    def _check_latent(self, z: torch.Tensor) -> None:
        C, p = self.config.latent_channels, self.config.latent_patch_size
        if z.dim() != 3 or z.shape[0] != C or z.shape[1] % p or z.shape[2] % p:
            raise ValueError(f"a latent image must be ({C}, h, w) with h and w multiples of {p}, got {tuple(z.shape)}")

    # --- forward ------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, layout: Layout, vit_images: list[torch.Tensor] = (),
                latents: list[torch.Tensor] = (), timesteps: torch.Tensor | None = None,
                compute_logits: bool = True, return_hidden: bool = False) -> OmniOutput:
        """input_ids (B, L) hold the text tokens (other positions are ignored); images and latents
        are given in layout order (row by row, segment by segment)."""
        x = self.embed(input_ids, layout, vit_images, latents, timesteps)  # (B, L, D)
        route = layout.gen_route if self.can_draw else None
        out = self.language_model(inputs_embeds=x, attention_mask=layout.mask, position_ids=layout.position_ids,
                                  gen_route=route, return_hidden=True, compute_logits=compute_logits)
        velocity = self._velocity(out.hidden, layout, latents) if len(latents) else []
        return OmniOutput(out.logits, velocity, out.hidden if return_hidden else None)

    def embed(self, input_ids: torch.Tensor, layout: Layout, vit_images=(), latents=(), timesteps=None) -> torch.Tensor:
        """The backbone's input (B, L, D): text embeddings, ViT features and latents at their kinds'
        positions (also what an engine request's multimodal prefix holds, sampling/omni.py)."""
        x = self.language_model.embed(torch.where(layout.kind == TEXT, input_ids, 0))  # (B, L, D)
        if len(vit_images):
            x = self._place(x, layout.kind == VIT, self.embed_images(list(vit_images)), "ViT image")
        if len(latents):
            t = timesteps if timesteps is not None else torch.zeros(len(latents), device=x.device)
            x = self._place(x, layout.kind == VAE, self.embed_latents(list(latents), t), "latent image")
        return x

    @staticmethod
    def _place(x: torch.Tensor, where: torch.Tensor, parts: list[torch.Tensor], what: str) -> torch.Tensor:
        """Write per-image embeddings into the positions of their kind (row-major order)."""
        tokens = torch.cat(parts).to(x.dtype)  # (N, D)
        if tokens.shape[0] != int(where.sum()):
            sizes = [p.shape[0] for p in parts]
            raise ValueError(f"the layout has {int(where.sum())} {what} tokens but the inputs give "
                             f"{tokens.shape[0]} (per image: {sizes})")
        x = x.clone()
        x[where] = tokens
        return x

    def _velocity(self, hidden: torch.Tensor, layout: Layout, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Predicted velocity per latent image, (C, h, w) each, from the VAE-token hidden states."""
        p = self.config.latent_patch_size
        v = self.llm2vae(hidden[layout.kind == VAE])  # (N, p p C)
        sizes = [z.shape[1] * z.shape[2] // (p * p) for z in latents]
        return [unpatchify(part[None], z.shape[1] // p, z.shape[2] // p, p)[0]
                for part, z in zip(v.split(sizes), latents)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
