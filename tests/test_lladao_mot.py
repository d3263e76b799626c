"""Mixture-of-Transformers backbone: routing by modality, one shared attention, copy-init, freezing."""

import pytest
import torch

from omnidlm.config import preset
from omnidlm.models.backbone import Backbone
from omnidlm.models.mot import MoTBackbone, und_name
from omnidlm.sequence.masks import document_mask

CFG = preset("llada-tiny", qk_norm=True, n_layers=2, hidden_size=32, n_heads=4, intermediate_size=64, vocab_size=512)


def perturb_generation(model: MoTBackbone, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.generation_parameters().values():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def dense_from(model: MoTBackbone, expert: str) -> Backbone:
    """A dense Backbone holding one expert's weights (gen weights renamed to the und names)."""
    dense = Backbone(CFG)
    state = model.state_dict()
    if expert == "gen":
        state.update({und_name(k): v for k, v in model.generation_parameters().items()})
    dense.load_state_dict({k: v for k, v in state.items() if ".gen." not in k and not k.startswith("norm_gen")})
    return dense.eval()


@pytest.fixture(scope="module")
def mot():
    torch.manual_seed(0)
    model = MoTBackbone(CFG).eval()
    perturb_generation(model)
    return model


def test_copy_init_gives_identical_experts():
    torch.manual_seed(0)
    model = MoTBackbone(CFG).eval()
    x = torch.randn(2, 7, CFG.hidden_size)
    route = torch.rand(2, 7) < 0.5
    with torch.no_grad():
        routed = model(inputs_embeds=x, gen_route=route, return_hidden=True).hidden
        plain = model(inputs_embeds=x, return_hidden=True).hidden
    torch.testing.assert_close(routed, plain, rtol=1e-5, atol=1e-6)


def test_routing_equals_two_dense_models_where_mask_separates(mot):
    # und tokens and gen tokens in two "documents": each expert alone must equal its dense model
    x = torch.randn(1, 8, CFG.hidden_size)
    route = torch.tensor([[False, True, False, True, True, False, False, True]])
    mask = document_mask(route.long())  # (1, 1, 8, 8): attend only within the same expert
    pos = torch.zeros(1, 8, dtype=torch.long)
    pos[route], pos[~route] = torch.arange(4), torch.arange(4)  # each group numbered 0..3
    with torch.no_grad():
        h = mot(inputs_embeds=x, gen_route=route, attention_mask=mask, position_ids=pos, return_hidden=True).hidden
        for expert, sel in (("und", ~route[0]), ("gen", route[0])):
            dense = dense_from(mot, expert)
            want = dense(inputs_embeds=x[:, sel], return_hidden=True).hidden
            torch.testing.assert_close(h[:, sel], want, rtol=1e-5, atol=1e-5)


def test_experts_share_one_attention(mot):
    # with full attention, und outputs depend on gen tokens' (gen-projected) keys and values
    x = torch.randn(1, 6, CFG.hidden_size)
    route = torch.tensor([[False, False, False, True, True, True]])
    with torch.no_grad():
        h = mot(inputs_embeds=x, gen_route=route, return_hidden=True).hidden
        und_alone = dense_from(mot, "und")(inputs_embeds=x, return_hidden=True).hidden
    assert not torch.allclose(h[0, :3], und_alone[0, :3], atol=1e-4)  # gen k/v differ from und k/v
    # ...but a mask hiding the gen tokens gives exactly the und model on the und tokens
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :3, 3:] = False
    with torch.no_grad():
        h = mot(inputs_embeds=x, gen_route=route, attention_mask=mask, return_hidden=True).hidden
        und_prefix = dense_from(mot, "und")(inputs_embeds=x[:, :3], return_hidden=True).hidden
    torch.testing.assert_close(h[0, :3], und_prefix[0], rtol=1e-5, atol=1e-5)


def test_without_generation_it_is_the_dense_backbone():
    torch.manual_seed(0)
    dense = Backbone(CFG).eval()
    mot = MoTBackbone(CFG, generation=False).eval()
    assert sorted(mot.state_dict()) == sorted(dense.state_dict())
    mot.load_state_dict(dense.state_dict())
    ids = torch.randint(0, 500, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(mot(ids).logits, dense(ids).logits)
    with pytest.raises(ValueError, match="no generation expert"):
        mot(ids, gen_route=torch.ones(2, 9, dtype=torch.bool))


def test_freezing_the_understanding_expert():
    torch.manual_seed(0)
    model = MoTBackbone(CFG)
    model.freeze_understanding()
    x = torch.randn(1, 6, CFG.hidden_size)
    route = torch.tensor([[False, False, True, True, True, False]])
    model(inputs_embeds=x, gen_route=route, return_hidden=True).hidden.pow(2).sum().backward()
    assert all(p.grad is None for p in model.understanding_parameters().values())
    assert all(p.grad is not None for n, p in model.generation_parameters().items()), "every gen weight trains"
    model.freeze_understanding(False)
    assert all(p.requires_grad for p in model.parameters())


def test_gen_names_map_to_und_names():
    assert und_name("layers.3.gen.attn.qkv.weight") == "layers.3.attn.qkv.weight"
    assert und_name("norm_gen.weight") == "norm.weight"


def test_cached_clean_prefix_equals_full_forward(mot):
    """A clean prefix (und) in the engine's KVCache, then noisy gen tokens that see it."""
    from omnidlm.sampling.cache import KVCache

    x = torch.randn(1, 7, CFG.hidden_size)
    route = torch.tensor([[False, False, False, False, True, True, True]])
    mask = torch.ones(1, 1, 7, 7, dtype=torch.bool)
    mask[..., :4, 4:] = False  # the prefix never sees the noisy part
    with torch.no_grad():
        full = mot(inputs_embeds=x, gen_route=route, attention_mask=mask, return_hidden=True).hidden
        cache = KVCache.for_model(mot, 1, 7)
        first, rest = torch.arange(4)[None], torch.arange(4, 7)[None]
        cache.begin(first, first, 4)
        mot(inputs_embeds=x[:, :4], gen_route=route[:, :4], position_ids=first, kv_cache=cache, compute_logits=False)
        cache.begin(rest, rest, 7)
        step = mot(inputs_embeds=x[:, 4:], gen_route=route[:, 4:], position_ids=rest, kv_cache=cache,
                   return_hidden=True).hidden
    torch.testing.assert_close(step, full[:, 4:], rtol=1e-5, atol=1e-5)
