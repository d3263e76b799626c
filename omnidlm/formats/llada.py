"""LLaDA checkpoints: the OLMo-style layout of LLaDA-8B and the Llama-style names of LLaDA-V's
language tower (docs/published/llada.md, llada-v.md). Both are dense, fully bidirectional models.
"""

from __future__ import annotations

from ..config import ModelConfig
from .rules import Rule, cat, one

# LLaDA-V checkpoints also hold the vision tower and projector; the language model ignores them.
LLADA_V_IGNORED = ("model.vision_tower.", "model.mm_projector.", "model.image_newline")


def _layer_rules(cfg: ModelConfig, names: dict[str, str], prefix: str) -> list[Rule]:
    """Rules of one dense layer given the published names of its parts."""
    q, kv, inter = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size, cfg.intermediate_size
    rules = [
        one("attn_norm.weight", names["attn_norm"] + ".weight"),
        cat("attn.qkv.weight", [names[p] + ".weight" for p in ("q", "k", "v")], [q, kv, kv]),
        one("attn.o_proj.weight", names["o"] + ".weight"),
        one("mlp_norm.weight", names["mlp_norm"] + ".weight"),
        cat("mlp.gate_up.weight", [names["gate"] + ".weight", names["up"] + ".weight"], [inter, inter]),
        one("mlp.down.weight", names["down"] + ".weight"),
    ]
    if cfg.qkv_bias:
        rules.append(cat("attn.qkv.bias", [names[p] + ".bias" for p in ("q", "k", "v")], [q, kv, kv]))
    if cfg.bias:
        rules.append(one("attn.o_proj.bias", names["o"] + ".bias"))
        rules.append(cat("mlp.gate_up.bias", [names["gate"] + ".bias", names["up"] + ".bias"], [inter, inter]))
        rules.append(one("mlp.down.bias", names["down"] + ".bias"))
    return [Rule(prefix + r.internal, tuple(r.sources), r.kind, r.split) for r in rules]


OLMO_NAMES = dict(q="q_proj", k="k_proj", v="v_proj", o="attn_out", gate="ff_proj", up="up_proj",
                  down="ff_out", attn_norm="attn_norm", mlp_norm="ff_norm")
LLAMA_NAMES = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
                   gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj",
                   attn_norm="input_layernorm", mlp_norm="post_attention_layernorm")


def llada_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [one("embed.weight", "model.transformer.wte.weight")]
    for i in range(cfg.n_layers):
        block = {k: f"model.transformer.blocks.{i}.{v}" for k, v in OLMO_NAMES.items()}
        rules += _layer_rules(cfg, block, f"layers.{i}.")
    rules += [one("norm.weight", "model.transformer.ln_f.weight"), one("head.weight", "model.transformer.ff_out.weight")]
    return rules


def llama_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [one("embed.weight", "model.embed_tokens.weight")]
    for i in range(cfg.n_layers):
        block = {k: f"model.layers.{i}.{v}" for k, v in LLAMA_NAMES.items()}
        rules += _layer_rules(cfg, block, f"layers.{i}.")
    rules += [one("norm.weight", "model.norm.weight"), one("head.weight", "lm_head.weight")]
    return rules


def _require(hf: dict, condition: bool, field: str, why: str) -> None:
    if not condition:
        raise ValueError(f"unsupported LLaDA config: field {field!r} = {hf.get(field)!r} ({why})")


def llada_config(hf: dict) -> dict:
    """ModelConfig fields from LLaDA's OLMo-style config.json."""
    _require(hf, not hf.get("weight_tying", False), "weight_tying", "LLaDA's head is untied")
    _require(hf, not hf.get("alibi", False), "alibi", "only RoPE is supported")
    _require(hf, hf.get("layer_norm_type", "rms") == "rms", "layer_norm_type", "only RMSNorm is supported")
    _require(hf, hf.get("block_type", "llama") == "llama", "block_type", "only the llama block is supported")
    _require(hf, not hf.get("attention_layer_norm", False), "attention_layer_norm", "not used by LLaDA")
    eos = hf.get("eos_token_id", 126081)
    return dict(
        vocab_size=hf.get("embedding_size") or hf["vocab_size"], hidden_size=hf["d_model"],
        n_layers=hf["n_layers"], n_heads=hf["n_heads"], n_kv_heads=hf.get("n_kv_heads"),
        intermediate_size=hf["mlp_hidden_size"], rms_norm_eps=hf.get("rms_norm_eps", 1e-5),
        rope_theta=hf.get("rope_theta", 10000.0), qkv_bias=bool(hf.get("include_qkv_bias") or hf.get("include_bias")),
        bias=bool(hf.get("include_bias", False)), max_seq_len=hf.get("max_sequence_length", 4096),
        mask_id=hf.get("mask_token_id", 126336), eos_id=eos, pad_id=hf.get("pad_token_id", eos),
        eot_id=hf.get("eot_token_id"), bos_id=hf.get("bos_token_id"),
    )


def llada_config_json(cfg: ModelConfig) -> dict:
    """LLaDA's config.json fields for a ModelConfig (the fields the published code reads)."""
    return {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": cfg.hidden_size,
        "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.kv_heads,
        "mlp_hidden_size": cfg.intermediate_size, "mlp_ratio": max(1, cfg.intermediate_size // cfg.hidden_size),
        "vocab_size": cfg.vocab_size, "embedding_size": cfg.vocab_size, "rms_norm_eps": cfg.rms_norm_eps,
        "rope": True, "rope_full_precision": True, "rope_theta": cfg.rope_theta, "alibi": False,
        "activation_type": "silu", "block_type": "llama", "layer_norm_type": "rms",
        "layer_norm_with_affine": True, "attention_layer_norm": False, "weight_tying": False,
        "include_bias": cfg.bias, "include_qkv_bias": cfg.qkv_bias, "scale_logits": False,
        "max_sequence_length": cfg.max_seq_len, "mask_token_id": cfg.mask_id, "eos_token_id": cfg.eos_id,
        "pad_token_id": cfg.pad_token_id, "torch_dtype": "float32", "use_cache": False,
        **({"eot_token_id": cfg.eot_id} if cfg.eot_id is not None else {}),
        **({"bos_token_id": cfg.bos_id} if cfg.bos_id is not None else {}),
    }


def llama_config(hf: dict) -> dict:
    """ModelConfig fields from the Llama-style config of LLaDA-V's language tower."""
    eos = hf.get("eos_token_id", 126081)
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf.get("num_key_value_heads"),
        head_dim=hf.get("head_dim"), intermediate_size=hf["intermediate_size"],
        rms_norm_eps=hf.get("rms_norm_eps", 1e-5), rope_theta=hf.get("rope_theta", 10000.0),
        qkv_bias=bool(hf.get("attention_bias", False)), bias=bool(hf.get("mlp_bias", False)),
        max_seq_len=hf.get("max_position_embeddings", 4096), mask_id=hf.get("mask_token_id", 126336),
        eos_id=eos if isinstance(eos, int) else eos[0], pad_id=hf.get("pad_token_id"),
        eot_id=hf.get("eot_token_id"), bos_id=hf.get("bos_token_id"),
    )


def llama_config_json(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["LLaDAModelLM"], "model_type": "llada_llama", "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size, "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "attention_bias": cfg.qkv_bias, "mlp_bias": cfg.bias, "max_position_embeddings": cfg.max_seq_len,
        "mask_token_id": cfg.mask_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
        **({"eot_token_id": cfg.eot_id} if cfg.eot_id is not None else {}),
        **({"bos_token_id": cfg.bos_id} if cfg.bos_id is not None else {}),
    }
