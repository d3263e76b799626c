"""Model configuration: one dataclass for every backbone of the family, and named presets.

A published checkpoint's `config.json` is translated into a `ModelConfig` by its format adapter
(`omnidlm/formats/`); inside the package only these field names exist.

    from omnidlm.config import preset
    cfg = preset("llada-8b")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

# what a field annotation admits (bool is not an int here: `n_layers: true` is a mistake)
_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}


def check_types(obj) -> None:
    """Raise ValueError naming the first dataclass field whose value is not of its annotated type
    (or a non-finite float): `hidden_size: "128"`, `n_layers: 4.5`, `rope_theta: NaN`."""
    for f in dataclasses.fields(obj):
        value, names = getattr(obj, f.name), [n.strip() for n in str(f.type).split("|")]
        if value is None and "None" in names:
            continue
        kinds = tuple(t for n in names for t in _KINDS.get(n, ()))
        if not kinds:
            continue
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if ok and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config field {f.name!r} must be a finite number, got {value!r}")
        if not ok:
            raise ValueError(f"config field {f.name!r} must be {' or '.join(names)}, got {value!r} "
                             f"({type(value).__name__})")


def build_dataclass(cls, data: dict, what: str):
    """`cls(**data)`, but an unknown field is a ValueError naming it and the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; valid fields: {sorted(names)}")
    return cls(**data)


@dataclass
class ModelConfig:
    """Shapes and special ids of a bidirectional Transformer (dense or Mixture-of-Experts)."""

    vocab_size: int = 512
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: multi-head attention (= n_heads)
    head_dim: int | None = None  # None: hidden_size // n_heads
    intermediate_size: int = 256  # dense SwiGLU MLP width
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0  # fraction of head_dim that is rotated
    qk_norm: bool = False  # RMSNorm over head_dim on queries and keys (LLaDA2.0)
    qkv_bias: bool = False
    bias: bool = False  # biases on the output projection and the MLP
    max_seq_len: int = 4096
    # Mixture of Experts (LLaDA2.0). n_experts == 0 means a dense model.
    n_experts: int = 0
    n_experts_per_tok: int = 1
    n_shared_experts: int = 0
    moe_intermediate_size: int = 0
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    first_k_dense: int = 0  # the first k layers keep a dense MLP
    # special ids
    mask_id: int = 500
    eos_id: int = 501
    pad_id: int | None = None  # None: same as eos_id (LLaDA pads answers with EOS)
    eot_id: int | None = None
    bos_id: int | None = None
    # attention pattern the model was trained with: "full" (LLaDA) or "block" (block diffusion)
    attention: str = "full"
    block_size: int = 32
    extra: dict = field(default_factory=dict)  # fields of the source config we carry but do not use

    def __post_init__(self):
        self.validate()

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_size * self.partial_rotary_factor)

    @property
    def pad_token_id(self) -> int:
        return self.eos_id if self.pad_id is None else self.pad_id

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot describe a model."""
        check_types(self)
        positive = ["vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size", "max_seq_len"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be positive, got {getattr(self, name)}")
        if self.head_dim is None and self.hidden_size % self.n_heads:
            raise ValueError(f"config field 'hidden_size' ({self.hidden_size}) must divide by n_heads ({self.n_heads})")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"config field 'n_kv_heads' ({self.kv_heads}) must divide n_heads ({self.n_heads})")
        if self.rotary_dim % 2:
            raise ValueError(f"config field 'partial_rotary_factor' gives an odd rotary dim {self.rotary_dim}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"config field 'mask_id' ({self.mask_id}) is outside the vocabulary ({self.vocab_size})")
        for name in ("eos_id", "pad_id", "eot_id", "bos_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"config field {name!r} ({value}) is outside the vocabulary ({self.vocab_size})")
        if self.pad_token_id == self.mask_id:
            raise ValueError(f"config field 'pad_id' equals mask_id ({self.mask_id}): padding would be denoised")
        if self.attention not in ("full", "block"):
            raise ValueError(f"config field 'attention' must be 'full' or 'block', got {self.attention!r}")
        if self.is_moe:
            self._validate_moe()

    def _validate_moe(self) -> None:
        if self.moe_intermediate_size <= 0:
            raise ValueError("config field 'moe_intermediate_size' must be positive for a MoE model")
        if self.n_experts % self.n_group:
            raise ValueError(f"config field 'n_group' ({self.n_group}) must divide n_experts ({self.n_experts})")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"config field 'topk_group' must be in [1, n_group], got {self.topk_group}")
        if not 1 <= self.n_experts_per_tok <= self.n_experts:
            raise ValueError(f"config field 'n_experts_per_tok' must be in [1, n_experts], got {self.n_experts_per_tok}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Build from a dict of our field names; an unknown field is an error that names it."""
        return build_dataclass(cls, data, "config")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# Shapes from docs/published/llada.md (LLaDA-8B) and llada2.md (LLaDA2.0-mini), and tiny ones for tests.
PRESETS: dict[str, dict] = {
    "llada-8b": dict(
        vocab_size=126464, hidden_size=4096, n_layers=32, n_heads=32, n_kv_heads=32,
        intermediate_size=12288, rms_norm_eps=1e-5, rope_theta=500000.0, max_seq_len=4096,
        mask_id=126336, eos_id=126081, pad_id=126081, eot_id=126348, bos_id=126080,
    ),
    "llada2-mini": dict(
        vocab_size=157184, hidden_size=2048, n_layers=20, n_heads=16, n_kv_heads=4, head_dim=128,
        intermediate_size=5120, rms_norm_eps=1e-6, rope_theta=600000.0, partial_rotary_factor=0.5,
        qk_norm=True, max_seq_len=32768, n_experts=256, n_experts_per_tok=8, n_shared_experts=1,
        moe_intermediate_size=512, n_group=8, topk_group=4, routed_scaling_factor=2.5,
        first_k_dense=1, mask_id=156895, eos_id=156892, pad_id=156892, attention="block",
    ),
    # the 60 M-parameter LLaDA shape of the engine benchmarks (docs/benchmarks.md)
    "llada-60m": dict(
        vocab_size=32000, hidden_size=512, n_layers=8, n_heads=8, intermediate_size=1536,
        rope_theta=500000.0, max_seq_len=8192, mask_id=31999, eos_id=31998,
    ),
    "llada-tiny": dict(
        vocab_size=512, hidden_size=64, n_layers=2, n_heads=4, intermediate_size=160,
        rope_theta=500000.0, max_seq_len=1024, mask_id=500, eos_id=501,
    ),
    "llada2-tiny": dict(
        vocab_size=384, hidden_size=64, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16,
        intermediate_size=128, rms_norm_eps=1e-6, rope_theta=600000.0, partial_rotary_factor=0.5,
        qk_norm=True, max_seq_len=1024, n_experts=16, n_experts_per_tok=4, n_shared_experts=1,
        moe_intermediate_size=32, n_group=4, topk_group=2, routed_scaling_factor=2.5,
        first_k_dense=1, mask_id=380, eos_id=381, attention="block",
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset, with field overrides; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
