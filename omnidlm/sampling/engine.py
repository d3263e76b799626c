"""The inference engine: ONE text sampling loop, parameterised by a commit policy and a cache mode,
over a batch of requests that each finish on their own.

    from omnidlm.sampling.engine import SamplingConfig, generate
    cfg = SamplingConfig(max_new_tokens=128, cache="exact", policy=Threshold(0.9, steps=32))
    results = generate(model, [[1, 2, 3], [4, 5]], cfg)     # -> [Result(tokens, forwards, ...)]

    engine = BatchEngine(model, cfg, max_batch=8)          # what the server drives
    engine.add(Request([1, 2, 3]))
    while engine.busy: finished = engine.step()            # one forward per call; rows join and leave

Layouts (`attention`):
- "block" (LLaDA2.0, block-diffusion models): block-causal attention, blocks aligned at position 0,
  so the block holding the prompt's tail is denoised with those prompt tokens fixed.
- "full" (LLaDA): bidirectional attention over [prompt | masks], blocks start at the prompt's end.

Cache modes:
- "none": every step recomputes the canvas (up to the current block for "block"). Policy "fixed"
  with cache "none" is the reference sampler (`reference.generate` / `generate_llada2`).
- "exact" ("block" only): each step computes the current block's queries against cached
  keys/values. The prompt is written by the first step, and a finished block's final keys/values
  by the next block's first step (one forward holds [finished block | next block]).
- "approx" (for "full"): the first step of a block runs the whole canvas and refreshes every slot;
  the other steps compute only the block against the cached prefix and suffix (a "dual cache").

Per-row settings (`Request.settings`, sampling/rows.py): the rows of one batch may each have their own
temperature, top-k, top-p, policy (threshold / factor / steps per block), ban ids and max_new_tokens,
and a request's `seed` gives it its own generator; block length, attention and cache are the engine's.

Multimodal prefix (`Request.prefix`, sampling/prefix.py): embeddings with their own RoPE positions
and attention mask before the canvas (an image's ViT features, LLaDA-o's layout), prefilled once
into the cache (one forward for the rows admitted together) or, with cache "none", recomputed with
the canvas; a prefix row's blocks are aligned at its canvas start. With "full" attention a block's
schedule spreads the masks it holds at its first step (LLaDA's rule), with "block" the block length
(LLaDA2.0's rule); the two differ only for a block that holds prompt tokens.

The GPU path (`BatchEngine(..., graphs=True)`, sampling/graphs.py): block steps run at fixed
bucket shapes over a static cache, each bucket captured once as a CUDA graph on a GPU; prefills
and refreshes stay eager. `compile=True` runs the forward through torch.compile.

Adaptive length (`stop_at_eos`): a row stops as soon as it holds a committed EOS with nothing
masked before it; its output is cut after that EOS (what the LLaDA2.0 sampler returns).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch

from . import prefix as PF
from .cache import KVCache
from .graphs import StepGraphs, compiled
from .config import ATTENTIONS, CACHE_MODES, SamplingConfig, check_config, reference_config  # noqa: F401 (re-exported)
from .policies import Threshold, step_minimum
from .prefix import Prefix
from .rows import RowSettings, RowTable
from .sprint import note_prompt, prune_row


@dataclass
class Request:
    """One answer to sample. `settings` None: the engine's SamplingConfig (temperature, top-k,
    top-p, policy, ban ids); `seed` None: the engine's generator (or torch's global one)."""

    prompt_ids: list[int]
    max_new_tokens: int | None = None  # None: the engine's SamplingConfig.max_new_tokens
    id: object = None  # given by `add` when None
    image_mask: list[bool] | None = None  # per prompt token, for SPRINT's per-modality keep ratios
    settings: RowSettings | None = None  # this row's sampling settings (sampling/rows.py)
    seed: int | None = None  # a generator of its own: the same answer whatever shares the batch
    prefix: Prefix | None = None  # a multimodal prefix before the canvas (sampling/prefix.py)


@dataclass
class Result:
    id: object
    tokens: list[int]  # the generated part (cut after the first EOS when stop_at_eos)
    forwards: int  # model forwards this request took part in
    finish_reason: str  # "eos", "length" or "cancelled"


@dataclass
class _Row:
    """One request in flight. Positions are the row's own: the prompt sits at [0, prompt_len)."""

    request: Request
    prompt_len: int
    end: int  # prompt_len + max_new_tokens: tokens at or past `end` are never returned
    length: int  # canvas length (a whole number of blocks past the layout's origin)
    block: int  # start of the current block
    step: int = 0  # steps taken in the current block
    cached: int = 0  # exact cache: positions before this are final in the cache
    forwards: int = 0
    shift: int = 0  # slot = position - shift: -prefix length, or SPRINT's pruned prompt positions
    prefix_conf: torch.Tensor | None = None  # SPRINT: top-1 confidence of the prefix and prompt positions
    rope: int = 0  # RoPE position of canvas position 0 (the prefix's next_position)
    prefilled: bool = True  # False until the prefix is in the cache

    @property
    def prefix(self) -> Prefix | None:
        return self.request.prefix


class BatchEngine:
    """Rows [0, n) of the batch are active; a finished row's slot is refilled from the queue."""

    def __init__(self, model, config: SamplingConfig | None = None, max_batch: int = 8,
                 generator: torch.Generator | None = None, compile: bool = False, graphs: bool = False,
                 max_length: int | None = None):
        """`compile`: the forward through torch.compile; `graphs`: block steps at fixed bucket
        shapes, CUDA graphs on a GPU (sampling/graphs.py); `max_length`: a static cache of that
        many positions per row, allocated once (default with `graphs`: room for any request the
        model takes)."""
        self.model, self.max_batch, self.generator = model, max_batch, generator
        self.cfg = (config or SamplingConfig()).resolved(model.config)
        if graphs and self.cfg.cache == "none":
            raise ValueError('graphs=True runs cached block steps: it needs SamplingConfig.cache "exact" or "approx"')
        self.mask_id, self.eos_id = model.config.mask_id, model.config.eos_id
        self.pad_id = model.config.pad_token_id
        self.rows: list[_Row] = []
        self.queue: list[Request] = []
        self._ids = itertools.count()
        self.tokens = torch.full((max_batch, 0), self.pad_id, dtype=torch.long, device=model.device)
        if graphs and max_length is None:  # whatever the model accepts, its canvas rounded up to whole blocks
            max_length = model.config.max_seq_len + self.cfg.block_length - 1
        self.cache = None if self.cfg.cache == "none" else KVCache.for_model(
            model, max_batch, max_length or 0, static=max_length is not None)
        self.compiled = compile
        self.forward = compiled(model) if compile else model
        self.graphs = StepGraphs(model, max_batch, self.cfg.block_length) if graphs else None
        self.defaults = RowSettings.of(self.cfg)
        self.table = RowTable(max_batch, model.config.vocab_size, model.device)  # per-row settings

    # -- requests in and out -------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.rows or self.queue)

    def add(self, request: Request | list[int]) -> object:
        """Queue a request (admitted at the next `step` when a row is free); -> its id."""
        request = request if isinstance(request, Request) else Request(list(request))
        self._validate(request)
        if request.id is None:
            request.id = next(self._ids)
        self.queue.append(request)
        return request.id

    def step(self) -> list[Result]:
        """Admit queued requests into free rows, run one denoising step of every active row;
        -> the requests that finished at this step."""
        while self.queue and len(self.rows) < self.max_batch:
            self._admit(self.queue.pop(0))
        if not self.rows:
            return []
        if self.cache is not None:
            PF.prefill(self)  # the prefixes of the rows admitted at this step
            self._prefill_prompts()
        return self._advance(*self._denoise())

    def run(self, requests) -> list[Result]:
        """Run requests to completion; -> results in the order given."""
        ids = [self.add(r) for r in requests]
        done = {}
        while self.busy:
            done.update((r.id, r) for r in self.step())
        return [done[i] for i in ids]

    def progress(self) -> dict:
        """{id: the generated tokens committed so far, up to the first still-masked one} for every
        active row (what a server streams)."""
        out = {}
        for i, row in enumerate(self.rows):
            ids = self.tokens[i, row.prompt_len : row.end].tolist()
            cut = ids.index(self.mask_id) if self.mask_id in ids else len(ids)
            ids = ids[:cut]
            out[row.request.id] = ids[: ids.index(self.eos_id) + 1] if self.eos_id in ids else ids
        return out

    def canvas(self) -> dict:
        """{id: the row's canvas from its prompt's end to the end of the block its last step
        denoised (the first block before any step), masks included} for every active row (what an
        unmasking animation draws)."""
        out = {}
        for i, row in enumerate(self.rows):
            just_done = row.step == 0 and row.forwards > 0  # the last step finished the previous block
            stop = min(row.end, row.block + (0 if just_done else self.cfg.block_length))
            out[row.request.id] = self.tokens[i, row.prompt_len : stop].tolist()
        return out

    def cancel(self, request_id) -> bool:
        """Drop a queued or active request (e.g. its client went away); -> whether it was found."""
        for j, request in enumerate(self.queue):
            if request.id == request_id:
                del self.queue[j]
                return True
        for i, row in enumerate(self.rows):
            if row.request.id == request_id:
                self._release([(i, "cancelled")])
                return True
        return False

    def _validate(self, request: Request) -> None:
        cfg, mcfg = self.cfg, self.model.config
        if not request.prompt_ids and request.prefix is None:
            raise ValueError("prompt_ids is empty: give at least one token")
        if request.prompt_ids and (min(request.prompt_ids) < 0 or max(request.prompt_ids) >= mcfg.vocab_size):
            raise ValueError(f"prompt_ids hold ids outside the vocabulary [0, {mcfg.vocab_size})")
        new = cfg.max_new_tokens if request.max_new_tokens is None else request.max_new_tokens
        if new <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {new}")
        prefix_len = self._validate_prefix(request.prefix)
        if prefix_len + len(request.prompt_ids) + new > mcfg.max_seq_len:
            raise ValueError(f"prompt ({prefix_len + len(request.prompt_ids)} tokens) + max_new_tokens ({new}) "
                             f"exceeds the model's maximum sequence length ({mcfg.max_seq_len})")
        need = prefix_len + self._layout(request)[3]
        if self.cache is not None and self.cache.static and need > self.cache.length:
            raise ValueError(f"prompt + max_new_tokens need {need} cache positions (whole blocks); the engine's "
                             f"static cache holds {self.cache.length} (max_length)")
        if request.settings is not None:
            if not isinstance(request.settings, RowSettings):
                raise ValueError(f"Request.settings must be a RowSettings or None, got {type(request.settings).__name__}")
            bad = [i for i in request.settings.ban_ids if not 0 <= i < mcfg.vocab_size]
            if bad:
                raise ValueError(f"ban_ids hold ids outside the vocabulary [0, {mcfg.vocab_size}): {bad[:3]}")
        if request.seed is not None and not isinstance(request.seed, int):
            raise ValueError(f"Request.seed must be an integer or None, got {request.seed!r}")

    def _validate_prefix(self, prefix) -> int:
        """-> the prefix's length (0 for None); ValueError naming what is wrong."""
        if prefix is None:
            return 0
        if not isinstance(prefix, Prefix):
            raise ValueError(f"Request.prefix must be a Prefix (sampling/prefix.py) or None, got {type(prefix).__name__}")
        if prefix.embeds.shape[1] != self.model.config.hidden_size:
            raise ValueError(f"Prefix.embeds have width {prefix.embeds.shape[1]}, the model's hidden size is "
                             f"{self.model.config.hidden_size}")
        return prefix.length

    def _settings(self, request: Request) -> RowSettings:
        """The row's settings: its own or the engine's; SPRINT's threshold replaces the policy's."""
        s = request.settings or self.defaults
        sprint = self.cfg.sprint
        if request.settings is not None and sprint is not None and sprint.threshold is not None:
            s = s.replace(policy=Threshold(sprint.threshold, s.policy.steps))
        return s

    def _layout(self, request: Request) -> tuple[int, int, int, int]:
        """-> (prompt length, end of the answer, start of the first block, canvas length)."""
        P, bl = len(request.prompt_ids), self.cfg.block_length
        end = P + (self.cfg.max_new_tokens if request.max_new_tokens is None else request.max_new_tokens)
        if self.cfg.attention == "block" or request.prefix is not None:  # blocks aligned at the canvas start
            return P, end, P // bl * bl, -(-end // bl) * bl
        return P, end, P, P + -(-(end - P) // bl) * bl  # blocks from the prompt's end

    def _admit(self, request: Request) -> None:
        P, end, first, length = self._layout(request)
        prefix = request.prefix
        r, prefix_len = len(self.rows), 0 if prefix is None else prefix.length
        self._ensure_length(length, prefix_len)
        self.tokens[r] = self.pad_id
        self.tokens[r, :P] = torch.tensor(request.prompt_ids, device=self.tokens.device)
        self.tokens[r, P:length] = self.mask_id
        if self.cache is not None:
            self.cache.reset_row(r)
        generator = None
        if request.seed is not None:
            generator = torch.Generator(device=self.tokens.device).manual_seed(request.seed)
        self.table.set(r, self._settings(request), generator)
        row = _Row(request, P, end, length, first, shift=-prefix_len)
        if prefix is not None:
            row.rope, row.prefilled = prefix.next_position, self.cache is None
        self.rows.append(row)

    def _ensure_length(self, length: int, prefix_len: int = 0) -> None:
        if length > self.tokens.shape[1]:
            pad = self.tokens.new_full((self.max_batch, length - self.tokens.shape[1]), self.pad_id)
            self.tokens = torch.cat([self.tokens, pad], dim=1)
        if self.cache is not None:
            self.cache.ensure_length(length + prefix_len)

    def _prefill_prompts(self) -> None:
        """Exact cache, rows admitted while others decode: ONE forward writes the new rows' prompt
        blocks before their first denoised block into the cache, so the denoising forward computes
        only each row's block. In one forward a new row's prompt would pad every decoding row's
        queries to its length (31 decoding rows and one 111-token prompt: 4x the step,
        docs/benchmarks.md "Serving"). Rows admitted with none decoding keep one forward."""
        if self.cfg.cache != "exact" or self.cfg.sprint is not None or all(r.forwards == 0 for r in self.rows):
            return
        new = [i for i, row in enumerate(self.rows) if row.forwards == 0 and row.cached < row.block]
        if not new:
            return
        first, dev = new[0], self.tokens.device
        rows = self.rows[first:]  # admitted at this step: at the end
        ends = [row.block for row in rows]  # their prompt blocks [0, block) (none for a row whose block is 0)
        q_pos = torch.arange(max(ends), device=dev).expand(len(rows), -1)
        valid = q_pos < torch.tensor(ends, device=dev)[:, None]
        plan = {"shift": torch.tensor([row.shift for row in rows], device=dev), "starts": None, "length": None, "dense": False,
                "rope": torch.tensor([row.rope for row in rows], device=dev),
                "width": max(e - row.shift for e, row in zip(ends, rows))}
        self._forward(torch.where(valid, q_pos, 0), valid, plan, logits_at=q_pos.new_zeros(len(rows), 0), first=first)
        for row, end in zip(rows, ends):
            row.cached = end

    # -- one denoising step ----------------------------------------------------------------------
    def _plan(self) -> dict[str, torch.Tensor]:
        """Per row (one host-to-device copy): the positions [a, e) this forward computes, the end
        of what it may see, and the row's state."""
        cfg, table = self.cfg, []
        for row in self.rows:
            block_end = row.block + cfg.block_length
            canvas_end = block_end if cfg.attention == "block" else row.length
            if cfg.cache == "exact":
                a, e = row.cached, block_end
            elif cfg.cache == "approx" and row.step > 0:
                a, e = row.block, block_end
            else:  # "none", or the refreshing first step of a block with "approx"
                a, e = 0, canvas_end
            table.append([a, e, canvas_end - row.shift, row.block, row.step, row.prompt_len, row.end,
                          row.length, row.shift, row.rope])
        cols = torch.tensor(table)
        if self.tokens.device.type == "cuda":  # pinned: the copy does not wait for the device
            cols = cols.pin_memory()
        names = ("a", "e", "seen", "block", "step", "prompt_len", "end", "length", "shift", "rope")
        plan = dict(zip(names, cols.to(self.tokens.device, non_blocking=True).unbind(1)))
        plan["n_queries"] = max(r[1] - r[0] for r in table)
        plan["width"] = max(r[2] for r in table)
        # the fast paths, for no padded row (compiled: always the scatter and a mask, so that one
        # graph serves every step)
        fast = all(r[1] - r[0] == plan["n_queries"] for r in table) and not self.compiled
        # every row writes the contiguous slots [a - shift, e - shift) (cache.begin)
        plan["starts"] = [r[0] - r[8] for r in table] if fast else None
        # every query sees every key of slots [0, width), decided on the host (no device read):
        # every row's slots filled up to the width (a row's slots are always filled from 0 up to
        # its `seen`), and with "block" attention only the current block queried
        plan["dense"] = fast and all(r[2] == plan["width"] for r in table) and (
            cfg.attention == "full" or all(r[0] == r[3] for r in table))
        return plan

    def _denoise(self):
        """One forward and one commit for every active row; -> (block tokens (n, bl), their
        positions (n, bl), the plan)."""
        n, bl, dev = len(self.rows), self.cfg.block_length, self.tokens.device
        plan = self._plan()
        a = plan["a"]
        q_pos = a[:, None] + torch.arange(plan["n_queries"], device=dev)  # (n, Lq)
        valid = q_pos < plan["e"][:, None]
        q_pos = torch.where(valid, q_pos, 0)
        idx = (plan["block"] - a)[:, None] + torch.arange(bl, device=dev)  # (n, bl) block within the queries
        # with a cache only the block goes through the head, except on a SPRINT prefill (it scores
        # the prompt positions by confidence); "none" keeps the reference's own call
        prefill = self.cfg.sprint is not None and any(row.forwards == 0 for row in self.rows)
        head_only = self.cache is not None and not prefill
        logits = self._forward(q_pos, valid, plan, idx if head_only else None)  # (n, Lq or bl, V)
        if head_only:
            block_logits = logits
        else:
            block_logits = logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))  # (n, bl, V)
        if prefill:
            self._note_prefix_confidence(logits, a)
        positions = plan["block"][:, None] + torch.arange(bl, device=dev)  # (n, bl)
        current = self.tokens[:n].gather(1, positions)
        new = self._commit(block_logits, current, plan["step"])
        self.tokens[:n].scatter_(1, positions, new)
        if self.cfg.cache == "exact":
            for row in self.rows:
                row.cached = row.block
        return new, positions, plan

    def _forward(self, q_pos: torch.Tensor, valid: torch.Tensor, plan, logits_at=None, first: int = 0) -> torch.Tensor:
        """Queries at q_pos (n, Lq) of rows [first, first + n) attend to keys of positions <
        plan["seen"] -> logits (n, Lq, V), or (n, K, V) at the query indices `logits_at` (n, K)."""
        n, bucket = q_pos.shape[0], None
        if self.graphs is not None and first == 0 and logits_at is not None:  # a block step, rows from 0
            bucket, q_pos, valid, plan, logits_at = self.graphs.fit(q_pos, valid, plan, logits_at, self.cache.length)
        tokens = torch.where(valid, self.tokens[first : first + q_pos.shape[0]].gather(1, q_pos), self.pad_id)  # (n, Lq)
        rope = q_pos + plan["rope"][:, None]  # RoPE positions: after a prefix they continue from it
        if self.cache is None:
            k_pos = torch.where(valid, q_pos, -1)
            if any(row.prefix is not None for row in self.rows):
                return PF.forward_with_prefix(self, tokens, q_pos, valid, k_pos, rope, plan)
            mask = None if plan["dense"] else self._mask(q_pos, valid, k_pos, plan["length"])
            return self._call(tokens, mask, rope, None, logits_at)
        slots = torch.where(valid, q_pos - plan["shift"][:, None], self.cache.trash)
        if bucket is None:
            return self._cached(tokens, slots, q_pos, valid, rope, plan["length"], logits_at,
                                width=plan["width"], first=first, starts=plan["starts"], dense=plan["dense"])
        step = functools.partial(self._cached, width=plan["width"], dense=plan["dense"])  # fit: always a mask
        return self.graphs.run(bucket, step, tokens, slots, q_pos, valid, rope, plan["length"], logits_at)[:n]

    def _cached(self, tokens, slots, q_pos, valid, rope, lengths, logits_at, width: int, first: int = 0,
                starts=None, dense: bool = False) -> torch.Tensor:
        """A forward with the cache: write the queries' slots, attend over slots [0, width)
        (`dense`: every query sees every one of them, so no mask)."""
        k_pos = self.cache.begin(slots, q_pos, width, first_row=first, starts=starts)  # (n, W)
        mask = None if dense else self._mask(q_pos, valid, k_pos, lengths)
        return self._call(tokens, mask, rope, self.cache, logits_at)

    def _call(self, tokens, mask, rope, kv, logits_at) -> torch.Tensor:
        if logits_at is None:  # the reference's own call (no logits_at argument)
            return self.forward(tokens, attention_mask=mask, position_ids=rope, kv_cache=kv).logits
        return self.forward(tokens, attention_mask=mask, position_ids=rope, kv_cache=kv, logits_at=logits_at).logits

    def _mask(self, q_pos, valid, k_pos, lengths) -> torch.Tensor:
        """(n, 1, Lq, W) True = may attend, from the positions of queries and key slots (-1: empty,
        PREFIX_SLOT: a prefix token, before every canvas position). A step whose queries see every
        key passes no mask instead (plan["dense"]): SDPA gives the same bits, as the reference's
        own call does."""
        key_ok = (k_pos != -1)[:, None, :]  # (n, 1, W)
        if self.cfg.attention == "block":
            bl = self.cfg.block_length
            ok = key_ok & (k_pos[:, None, :] // bl <= q_pos[:, :, None] // bl)  # (n, Lq, W)
        else:
            ok = (key_ok & (k_pos < lengths[:, None])[:, None, :]).expand(-1, q_pos.shape[1], -1)
        pad = ~valid[:, :, None] & (torch.arange(k_pos.shape[1], device=k_pos.device) == 0)
        return (ok | pad)[:, None]  # padded queries see slot 0 (their output is dropped)

    def _commit(self, block_logits, current, step) -> torch.Tensor:
        """Choose tokens, apply each row's policy, -> the block with the committed tokens filled in."""
        cfg, (n, bl) = self.cfg, current.shape
        x0, conf = self.table.choose(block_logits, self.generator)  # each row's temperature, top-k/p, bans
        if cfg.remasking == "random":
            conf = self.table.uniform(n, bl, self.generator)
        masked = current == self.mask_id  # (n, bl)
        conf = torch.where(masked, conf, float("-inf"))
        minimum = step_minimum(self._scheduled_total(masked, step), self.table.column("steps", n), step, masked.sum(1))
        if cfg.sprint is not None:  # SPRINT accepts at least min_accept tokens per step
            minimum = torch.maximum(minimum, masked.sum(1).clamp(max=cfg.sprint.min_accept))
        commit = self.table.commit(conf, minimum) & masked
        return torch.where(commit, x0, current)

    def _scheduled_total(self, masked: torch.Tensor, step: torch.Tensor):
        """The count a block's schedule spreads over its steps: with "block" attention the block
        length (LLaDA2.0's rule); with "full" the block's masks at its first step (LLaDA's and
        LLaDA-o's rule; a block that holds the answer's opening tokens has fewer)."""
        if self.cfg.attention == "block":
            return self.cfg.block_length
        total = self.table.column("block_masks", masked.shape[0])
        total.copy_(torch.where(step == 0, masked.sum(1), total))
        return total

    # -- bookkeeping after a step ----------------------------------------------------------------
    def _advance(self, new: torch.Tensor, positions: torch.Tensor, plan) -> list[Result]:
        block_done = (new != self.mask_id).all(1)
        eos_done = self._eos_done(new, positions, plan) if self.cfg.stop_at_eos else torch.zeros_like(block_done)
        block_done, eos_done = torch.stack([block_done, eos_done]).tolist()
        finished = []
        for i, row in enumerate(self.rows):
            row.forwards += 1
            row.step += 1
            if eos_done[i]:
                finished.append((i, "eos"))
            elif block_done[i]:
                row.block, row.step = row.block + self.cfg.block_length, 0
                if row.block >= row.length:
                    finished.append((i, "length"))
            if self.cfg.sprint is not None and row.forwards == self.cfg.sprint.warmup:
                prune_row(self, i)
        return self._release(finished)

    def _eos_done(self, new: torch.Tensor, positions: torch.Tensor, plan) -> torch.Tensor:
        """(n,) True where the row holds a committed EOS with nothing masked before it.
        Earlier blocks hold no EOS (the row would have stopped), so the current block decides."""
        P, end = plan["prompt_len"][:, None], plan["end"][:, None]
        gen = (positions >= P) & (positions < end)  # (n, bl)
        eos = (new == self.eos_id) & gen
        first = torch.where(eos, positions, end).min(1, keepdim=True).values  # (n, 1)
        masked_before = ((new == self.mask_id) & gen & (positions < first)).any(1)
        return eos.any(1) & ~masked_before

    def _release(self, finished: list[tuple[int, str]]) -> list[Result]:
        """Results for finished rows; the last active row moves into each freed slot."""
        results = []
        for i, reason in sorted(finished, reverse=True):
            results.append(self._result(i, reason))
            last = len(self.rows) - 1
            if i != last:
                self.tokens[i] = self.tokens[last]
                self.table.move(last, i)
                if self.cache is not None:
                    self.cache.move_row(last, i)
                self.rows[i] = self.rows[last]
            self.rows.pop()
        return results[::-1]

    def _result(self, i: int, reason: str) -> Result:
        row = self.rows[i]
        out = self.tokens[i, row.prompt_len : row.end].tolist()
        if self.cfg.stop_at_eos and self.eos_id in out:
            out = out[: out.index(self.eos_id) + 1]
            reason = "eos"
        return Result(row.request.id, out, row.forwards, reason)

    def _note_prefix_confidence(self, logits, a) -> None:
        for i, row in enumerate(self.rows):
            if row.forwards == 0:  # the prefill step: confidences of the prompt positions
                note_prompt(row, logits[i], int(a[i]))


def generate(model, prompts, config: SamplingConfig | None = None, max_batch: int = 8,
             generator: torch.Generator | None = None) -> list[Result]:
    """Run lists of prompt ids (or Requests) through a BatchEngine; -> results in order."""
    return BatchEngine(model, config, max_batch, generator).run(prompts)
