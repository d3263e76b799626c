"""The key/value cache of the inference engine: slots written in place, one row per request.

Each layer holds keys and values shaped (batch, kv_heads, slots + 1, head_dim). A forward writes
the keys/values of the tokens it computes straight into their slots, then every query attends over
slots [0, width) of its row under a mask built from `slot_pos` (the position held by each slot,
-1 = empty). The last slot is a trash slot that absorbs the writes of padded queries.

    cache = KVCache.for_model(model, batch=4, length=512)
    cache.begin(slots, positions, width)                   # the engine says where the new tokens go
    model(tokens, attention_mask=m, position_ids=positions, kv_cache=cache)

The protocol with `Attention` (omnidlm/nn/layers.py) is one call per layer:
`k, v = kv_cache.attend_kv(layer_idx, k_new, v_new)` returns the keys/values to attend over, the new
ones included. The engine picks the slots: slot = position - shift, with shift 0 until SPRINT
(`sprint.py`) compacts a row's prefix; positions after the pruned prefix stay contiguous.

Why in place rather than concatenating the new keys to the cached ones: no copy of the prefix per
layer per step, and every shape of a block step is known in advance (the GPU path's graphs need that).
"""

from __future__ import annotations

import torch


class KVCache:
    """Slots of keys/values for `batch` rows of up to `length` positions each."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, head_dim: int, length: int,
                 dtype=torch.float32, device=None, static: bool = False):
        self.n_layers, self.batch, self.length, self.static = n_layers, batch, length, static
        shape = (batch, kv_heads, length + 1, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slot_pos = torch.full((batch, length + 1), -1, dtype=torch.long, device=device)  # (B, T+1)
        self._rows = self._slots = self._starts = None
        self.width = self._first = 0

    @classmethod
    def for_model(cls, model, batch: int, length: int, static: bool = False) -> "KVCache":
        """`static`: the buffers never move (a captured CUDA graph holds their addresses,
        sampling/graphs.py); a row needing more than `length` positions is refused."""
        cfg = model.config
        return cls(cfg.n_layers, batch, cfg.kv_heads, cfg.head_size, length, model.dtype, model.device, static)

    @property
    def trash(self) -> int:
        """The slot padded queries write to; never attended (it lies beyond every width)."""
        return self.length

    def ensure_length(self, length: int) -> None:
        """Grow every row to hold `length` positions (copying what is cached)."""
        if length <= self.length:
            return
        if self.static:
            raise ValueError(f"a row needs {length} cache positions; this static cache holds {self.length} (max_length)")
        grow = length - self.length
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                pad = t.new_zeros(t.shape[0], t.shape[1], grow, t.shape[3])
                store[i] = torch.cat([t[:, :, :-1], pad, t[:, :, -1:]], dim=2)
        pad = self.slot_pos.new_full((self.batch, grow), -1)
        self.slot_pos = torch.cat([self.slot_pos[:, :-1], pad, self.slot_pos[:, -1:]], dim=1)
        self.length = length

    def begin(self, slots: torch.Tensor, positions: torch.Tensor, width: int, first_row: int = 0,
              starts: list[int] | None = None) -> torch.Tensor:
        """Prepare a forward of rows [first_row, first_row + n): query j of batch row r writes slot
        slots[r, j] (trash for padding) and holds position positions[r, j] (a prefix slot holds
        `prefix.PREFIX_SLOT`). `starts` (host ints, one per row): given when every row's slots are
        the contiguous range [starts[r], starts[r] + Lq), so each layer's writes are slice copies
        instead of scatters. -> the positions of slots [0, width) of those rows, (n, W)."""
        n = slots.shape[0]
        if width > self.length:
            raise ValueError(f"cache width {width} exceeds its length {self.length}")
        rows = torch.arange(first_row, first_row + n, device=slots.device)
        self._rows = rows[:, None].expand_as(slots)  # (n, Lq)
        self._slots, self.width, self._first = slots, width, first_row
        self._starts = None if starts is None else self._runs(starts, slots.shape)
        self.slot_pos[self._rows, slots] = torch.where(slots == self.trash, -1, positions)
        return self.slot_pos[first_row : first_row + n, :width]

    def attend_kv(self, layer_idx: int, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor):
        """Write the new keys/values into their slots; -> keys/values of slots [0, width)."""
        rows = slice(self._first, self._first + k_BHLD.shape[0])
        k_store, v_store = self.k[layer_idx], self.v[layer_idx]
        if self._starts is None:
            k_store[self._rows, :, self._slots] = k_BHLD.transpose(1, 2).to(k_store.dtype)  # (n, Lq, H, D)
            v_store[self._rows, :, self._slots] = v_BHLD.transpose(1, 2).to(v_store.dtype)
        else:
            L = k_BHLD.shape[2]
            for i, j, start in self._starts:  # batch rows [i, j) all start at slot `start`
                r = slice(self._first + i, self._first + j)
                k_store[r, :, start : start + L].copy_(k_BHLD[i:j])
                v_store[r, :, start : start + L].copy_(v_BHLD[i:j])
        return k_store[rows, :, : self.width], v_store[rows, :, : self.width]

    def _runs(self, starts: list[int], shape) -> list[tuple[int, int, int]]:
        """Row starts -> runs (first row, end row, start) of equal starts: one copy per run."""
        n, L = shape
        if len(starts) != n or min(starts) < 0 or max(starts) + L > self.length:
            raise ValueError(f"starts {starts} do not give {n} ranges of {L} slots inside length {self.length}")
        out = []
        for i, start in enumerate(starts):
            if out and out[-1][2] == start:
                out[-1] = (out[-1][0], i + 1, start)
            else:
                out.append((i, i + 1, start))
        return out

    def reset_row(self, row: int) -> None:
        """Forget a row (a new request takes its place)."""
        self.slot_pos[row] = -1

    def move_row(self, src: int, dst: int) -> None:
        """Copy row `src` into row `dst` (the engine keeps active rows packed at the front)."""
        for store in (self.k, self.v):
            for t in store:
                t[dst] = t[src]
        self.slot_pos[dst] = self.slot_pos[src]

    def compact_row(self, row: int, keep_slots: torch.Tensor, next_position: int) -> int:
        """Keep only `keep_slots` (ascending) of `row`, packed at the front, so that positions from
        `next_position` on are written right after them; -> the row's new shift (position - slot)."""
        kept = keep_slots.numel()
        for store in (self.k, self.v):
            for t in store:
                t[row, :, :kept] = t[row, :, keep_slots]
        pos = self.slot_pos[row, keep_slots].clone()
        self.slot_pos[row] = -1
        self.slot_pos[row, :kept] = pos
        return next_position - kept

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
