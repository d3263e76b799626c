"""A multimodal prefix of an engine request: embeddings (ViT features at image positions, text
embeddings around them) that condition the answer canvas, with their own RoPE positions and
attention structure.

    prefix = Prefix(embeds, position_ids=torch.tensor([0, 0, 0, 1, 2]), mask=split_mask([0, 0, 0, 1, 1]))
    engine.add(Request(prompt_ids=[bos], prefix=prefix))     # the canvas [bos | masks] follows the prefix

Layout of a row with a prefix of P embeddings: [prefix | canvas]. The canvas's RoPE positions
continue at `next_position` (LLaDA-o: an image takes ONE position, the tokens after it continue
from it, docs/architecture.md); its blocks are aligned at the canvas's start in both attention
layouts (the prefix is the prompt; `prompt_ids` are the answer's fixed opening tokens, such as
LLaDA-o's [bos]). What sees what:

- canvas queries see every prefix token, and the canvas under the engine's attention layout;
- with "block" attention, a prefix token sees the prefix tokens its `mask` allows (LLaDA-o's
  intra-modality splits: `split_mask`, or a segment layout's mask) and never the canvas, so the
  prefix is a clean prefix: cached modes prefill it ONCE (one forward for the rows admitted together)
  into the engine's KVCache, at slots [0, P) of the row;
- with "full" attention and cache "none", every token sees every token, the prefix included
  (LLaDA-o's `chat(use_cache=False)` layout: one full split): [prefix | canvas] is recomputed at
  every step; with cache "approx" the prefix is prefilled as above and the canvas refreshes over it.

A `Deferred` prefix is one whose embeddings are still to be computed: a server builds the deferred
prefixes of all the requests it takes at once with ONE call of their builder (`resolve`), so
LLaDA-o's image questions go through the ViT as one batch (serve/scheduler.py, sampling/omni.py)
instead of one forward per request on the HTTP threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .sprint import note_prefill

PREFIX_SLOT = -2  # KVCache.slot_pos of a prefix slot: before every canvas position (-1 is an empty slot)


@dataclass
class Prefix:
    """Embeddings before a request's canvas, with their own attention structure: `mask` (P, P)
    bool, True = may attend (e.g. `segments.single(segs).mask[0, 0]`, or `split_mask(splits)`);
    None: every prefix token sees every prefix token."""

    embeds: torch.Tensor  # (P, D) input embeddings, in the model's hidden size
    position_ids: torch.Tensor  # (P,) RoPE positions
    mask: torch.Tensor | None = None  # (P, P) bool among the prefix tokens (with "block" attention)
    next_position: int | None = None  # RoPE position of canvas token 0; None: max(position_ids) + 1
    image_mask: torch.Tensor | None = None  # (P,) bool, True at image embeddings: SPRINT's keep_image (sampling/sprint.py)

    def __post_init__(self):
        if self.embeds.dim() != 2 or self.embeds.shape[0] == 0:
            raise ValueError(f"Prefix.embeds must be (P, D) with P > 0, got shape {tuple(self.embeds.shape)}")
        P = self.embeds.shape[0]
        self.position_ids = torch.as_tensor(self.position_ids, dtype=torch.long).reshape(-1)
        if self.position_ids.shape[0] != P:
            raise ValueError(f"Prefix.position_ids has {self.position_ids.shape[0]} entries for {P} embeddings")
        if self.mask is not None:
            self.mask = torch.as_tensor(self.mask, dtype=torch.bool)
            if self.mask.shape != (P, P):
                raise ValueError(f"Prefix.mask must be ({P}, {P}) for {P} embeddings, got {tuple(self.mask.shape)}")
            if not self.mask.any(1).all():
                raise ValueError("Prefix.mask has a token that sees nothing (an empty attention row)")
        if self.image_mask is not None:
            self.image_mask = torch.as_tensor(self.image_mask, dtype=torch.bool).reshape(-1)
            if self.image_mask.shape[0] != P:
                raise ValueError(f"Prefix.image_mask has {self.image_mask.shape[0]} entries for {P} embeddings")
        if self.next_position is None:
            self.next_position = int(self.position_ids.max()) + 1

    @property
    def length(self) -> int:
        return self.embeds.shape[0]


@dataclass(eq=False)
class Deferred:
    """A prefix to be built later, together with the others of the same `build`: `build(items) ->
    [Prefix]` embeds many at once (one batched forward). `length` is the prefix's length, known
    before it is built (a server checks the room left for the answer)."""

    build: Callable[[list], list[Prefix]]  # shared by every request of its kind (one object)
    item: object  # what `build` needs of this prefix
    length: int


def resolve(prefixes: list) -> list[Prefix | None]:
    """Every `Deferred` built, one `build` call per builder (a Deferred given twice is built once);
    other entries (a Prefix, None) as given."""
    groups: dict[object, dict[int, Deferred]] = {}
    for p in prefixes:
        if isinstance(p, Deferred):
            groups.setdefault(p.build, {})[id(p)] = p
    built: dict[int, Prefix] = {}
    for build, group in groups.items():
        made = build([p.item for p in group.values()])
        if len(made) != len(group):
            raise ValueError(f"a prefix builder returned {len(made)} prefixes for {len(group)} items")
        built.update(zip(group, made))
    return [built[id(p)] if isinstance(p, Deferred) else p for p in prefixes]


def split_mask(splits: torch.Tensor) -> torch.Tensor:
    """(P,) non-decreasing split index -> (P, P): a split sees the earlier splits and itself fully
    (LLaDA-o's intra-modality attention for clean splits)."""
    splits = torch.as_tensor(splits, dtype=torch.long)
    if (splits.diff() < 0).any():
        raise ValueError("splits must be non-decreasing (a split sees the splits before it)")
    return splits[None, :] <= splits[:, None]


def stack(prefixes: list[Prefix | None], device, dtype) -> dict[str, torch.Tensor]:
    """Rows' prefixes left-aligned and padded to the longest: embeds (n, P, D), position_ids (n, P),
    mask (n, P, P) (padded queries see key 0, their output is dropped) and `valid` (n, P) bool."""
    width = max((p.length for p in prefixes if p is not None), default=0)
    dim = next(p.embeds.shape[1] for p in prefixes if p is not None)
    n = len(prefixes)
    out = {"embeds": torch.zeros(n, width, dim, device=device, dtype=dtype),
           "position_ids": torch.zeros(n, width, dtype=torch.long, device=device),
           "mask": torch.zeros(n, width, width, dtype=torch.bool, device=device),
           "valid": torch.zeros(n, width, dtype=torch.bool, device=device)}
    for i, p in enumerate(prefixes):
        if p is not None:
            P = p.length
            out["embeds"][i, :P] = p.embeds.to(device=device, dtype=dtype)
            out["position_ids"][i, :P] = p.position_ids.to(device)
            out["mask"][i, :P, :P] = True if p.mask is None else p.mask.to(device)
            out["valid"][i, :P] = True
    out["mask"][:, :, 0] |= ~out["valid"]
    return out


def query_mask(pre: dict, keys: torch.Tensor, lengths: torch.Tensor, full: bool) -> torch.Tensor:
    """The prefix queries' rows of an uncached [prefix | canvas] forward -> (n, P, K) bool. `keys`
    (n, K): the key positions (-1 empty, PREFIX_SLOT a prefix token, else a canvas position).
    With full attention a prefix token sees every real key, canvas included; else its own mask's
    prefix keys. Padded queries see key 0."""
    valid, P = pre["valid"], pre["valid"].shape[1]
    if full:
        ok = ((keys != -1) & (keys < lengths[:, None]))[:, None, :].expand(-1, P, -1)
        pad = ~valid[:, :, None] & (torch.arange(keys.shape[1], device=keys.device) == 0)
        return ok | pad
    canvas = keys.new_zeros(keys.shape[0], P, keys.shape[1] - P, dtype=torch.bool)
    return torch.cat([pre["mask"], canvas], dim=2)


# -- the engine's prefix forwards (sampling/engine.py) ------------------------------------------

def prefill(engine) -> None:
    """Cached modes: ONE forward writes the prefixes of the rows admitted at this step (contiguous, at the
    end) into slots [0, P) of their cache rows, under each prefix's own mask."""
    todo = [i for i, row in enumerate(engine.rows) if not row.prefilled]
    if not todo:
        return
    first, n = todo[0], len(engine.rows) - todo[0]
    rows = engine.rows[first:]
    pre = stack([row.prefix if not row.prefilled else None for row in rows], engine.tokens.device, engine.model.dtype)
    width = pre["valid"].shape[1]
    slots = torch.where(pre["valid"], torch.arange(width, device=engine.tokens.device), engine.cache.trash)
    engine.cache.begin(slots, torch.full_like(slots, PREFIX_SLOT), width, first_row=first)
    mask = pre["mask"][:, None]  # (n, 1, P, P)
    sprint = engine.cfg.sprint is not None  # SPRINT scores the prefix positions by confidence
    out = engine.forward(None, inputs_embeds=pre["embeds"], attention_mask=mask, position_ids=pre["position_ids"],
                         kv_cache=engine.cache, logits_at=None if sprint else slots.new_zeros(n, 0))
    if sprint:
        note_prefill(rows, out.logits)
    for row in rows:
        row.prefilled = True


def forward_with_prefix(engine, tokens, q_pos, valid, k_pos, rope, plan) -> torch.Tensor:
    """Cache "none": [prefix | canvas queries] in one forward -> the canvas queries' logits.
    Canvas queries see the prefix; prefix queries see the canvas too with "full" attention
    (every token sees every token), else only what their prefix mask allows."""
    pre = stack([row.prefix for row in engine.rows], engine.tokens.device, engine.model.dtype)
    P = pre["valid"].shape[1]
    x = torch.cat([pre["embeds"], engine.model.embed(tokens).to(pre["embeds"].dtype)], dim=1)  # (n, P + Lq, D)
    keys = torch.cat([torch.where(pre["valid"], PREFIX_SLOT, -1), k_pos], dim=1)  # (n, P + Lq)
    full = engine.cfg.attention == "full"
    if full and plan["dense"] and len({row.prefix.length for row in engine.rows}) == 1:
        mask = None  # every token sees every token, none padded: LLaDA-o's chat(use_cache=False) call
    else:
        canvas = engine._mask(q_pos, valid, keys, plan["length"])  # canvas queries over all keys
        prefix_q = query_mask(pre, keys, plan["length"], full)  # (n, P, P + Lq)
        mask = torch.cat([prefix_q[:, None], canvas], dim=2)  # (n, 1, P + Lq, P + Lq)
    positions = torch.cat([pre["position_ids"], rope], dim=1)
    return engine.forward(None, inputs_embeds=x, attention_mask=mask, position_ids=positions).logits[:, P:]
