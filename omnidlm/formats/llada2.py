"""LLaDA2.0 MoE checkpoints (`model_type: llada2_moe`, docs/published/llada2.md and fixtures/README.md).

Two expert layouts: `split` (the published one: `mlp.experts.E.{gate,up,down}_proj.weight`) and
`fused` (`mlp.experts.{gate,up,down}_proj.weight` stacked as (E, I, H) / (E, H, I)). The attention
projection is already fused as `query_key_value`, in the same (q heads, k heads, v heads) order as
ours.
"""

from __future__ import annotations

from ..config import ModelConfig
from .rules import Rule, cat, one, stack

# LLaDA2.0-mini's tokenizer ids (docs/published/llada2.md), used when a config leaves them out.
MINI_VOCAB, MINI_MASK, MINI_EOS = 157184, 156895, 156892


def _mlp_rules(cfg: ModelConfig, i: int, p: str, fused: bool) -> list[Rule]:
    if i < cfg.first_k_dense or not cfg.is_moe:
        inter = cfg.intermediate_size
        return [
            cat(f"layers.{i}.mlp.gate_up.weight", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], [inter, inter]),
            one(f"layers.{i}.mlp.down.weight", p + "mlp.down_proj.weight"),
        ]
    rules = [one(f"layers.{i}.mlp.router.weight", p + "mlp.gate.weight"),
             one(f"layers.{i}.mlp.router.expert_bias", p + "mlp.gate.expert_bias")]
    for part in ("gate", "up", "down"):
        internal = f"layers.{i}.mlp.experts.{part}"
        if fused:
            rules.append(one(internal, f"{p}mlp.experts.{part}_proj.weight"))
        else:
            rules.append(stack(internal, [f"{p}mlp.experts.{e}.{part}_proj.weight" for e in range(cfg.n_experts)]))
    if cfg.n_shared_experts:
        inter = cfg.moe_intermediate_size * cfg.n_shared_experts
        shared = p + "mlp.shared_experts."
        rules += [
            cat(f"layers.{i}.mlp.shared.gate_up.weight", [shared + "gate_proj.weight", shared + "up_proj.weight"], [inter, inter]),
            one(f"layers.{i}.mlp.shared.down.weight", shared + "down_proj.weight"),
        ]
    return rules


def llada2_rules(cfg: ModelConfig, fused: bool = False) -> list[Rule]:
    rules = [one("embed.weight", "model.word_embeddings.weight")]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        rules += [
            one(f"layers.{i}.attn_norm.weight", p + "input_layernorm.weight"),
            one(f"layers.{i}.attn.qkv.weight", p + "attention.query_key_value.weight"),
            one(f"layers.{i}.attn.o_proj.weight", p + "attention.dense.weight"),
            one(f"layers.{i}.mlp_norm.weight", p + "post_attention_layernorm.weight"),
        ]
        if cfg.qkv_bias:
            rules.append(one(f"layers.{i}.attn.qkv.bias", p + "attention.query_key_value.bias"))
        if cfg.bias:
            rules.append(one(f"layers.{i}.attn.o_proj.bias", p + "attention.dense.bias"))
        if cfg.qk_norm:
            rules += [one(f"layers.{i}.attn.q_norm.weight", p + "attention.query_layernorm.weight"),
                      one(f"layers.{i}.attn.k_norm.weight", p + "attention.key_layernorm.weight")]
        rules += _mlp_rules(cfg, i, p, fused)
    return rules + [one("norm.weight", "model.norm.weight"), one("head.weight", "lm_head.weight")]


def is_fused(keys) -> bool:
    return any(k.endswith("mlp.experts.gate_proj.weight") for k in keys)


def llada2_config(hf: dict, keys) -> dict:
    """ModelConfig fields from a `llada2_moe` config.json; QK norm is read off the tensors if the field is absent."""
    if hf.get("tie_word_embeddings"):
        raise ValueError("unsupported LLaDA2 config: field 'tie_word_embeddings' = True (the head is untied)")
    vocab = hf["vocab_size"]
    eos = hf.get("eos_token_id", hf.get("pad_token_id", MINI_EOS if vocab == MINI_VOCAB else None))
    mask = hf.get("mask_token_id", MINI_MASK if vocab == MINI_VOCAB else None)
    qk_norm = hf.get("use_qk_norm", any("attention.query_layernorm" in k for k in keys))
    return dict(
        vocab_size=vocab, hidden_size=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf.get("num_key_value_heads"), head_dim=hf.get("head_dim"),
        intermediate_size=hf["intermediate_size"], rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=hf.get("rope_theta", 600000.0), partial_rotary_factor=hf.get("partial_rotary_factor", 1.0),
        qk_norm=bool(qk_norm), qkv_bias=bool(hf.get("use_qkv_bias", False)), bias=bool(hf.get("use_bias", False)),
        max_seq_len=hf.get("max_position_embeddings", 4096), n_experts=hf.get("num_experts") or 0,
        n_experts_per_tok=hf.get("num_experts_per_tok", 1), n_shared_experts=hf.get("num_shared_experts") or 0,
        moe_intermediate_size=hf.get("moe_intermediate_size", 0), n_group=hf.get("n_group", 1),
        topk_group=hf.get("topk_group", 1), routed_scaling_factor=hf.get("routed_scaling_factor", 1.0),
        norm_topk_prob=hf.get("norm_topk_prob", True), first_k_dense=hf.get("first_k_dense_replace", 0),
        mask_id=mask, eos_id=eos, pad_id=hf.get("pad_token_id"), attention="block",
    )


def llada2_config_json(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size, "intermediate_size": cfg.intermediate_size,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "partial_rotary_factor": cfg.partial_rotary_factor, "use_qk_norm": cfg.qk_norm,
        "use_qkv_bias": cfg.qkv_bias, "use_bias": cfg.bias, "max_position_embeddings": cfg.max_seq_len,
        "num_experts": cfg.n_experts or None, "num_experts_per_tok": cfg.n_experts_per_tok,
        "num_shared_experts": cfg.n_shared_experts or None, "moe_intermediate_size": cfg.moe_intermediate_size,
        "n_group": cfg.n_group, "topk_group": cfg.topk_group, "routed_scaling_factor": cfg.routed_scaling_factor,
        "norm_topk_prob": cfg.norm_topk_prob, "first_k_dense_replace": cfg.first_k_dense,
        "score_function": "sigmoid", "moe_router_enable_expert_bias": True, "hidden_act": "silu",
        "tie_word_embeddings": False, "mask_token_id": cfg.mask_id, "eos_token_id": cfg.eos_id,
        "pad_token_id": cfg.pad_token_id, "torch_dtype": "float32", "use_cache": False,
    }
