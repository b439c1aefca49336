"""A KV cache allocated once: one [slots, K, capacity, E] key and value buffer per layer.

Shape legend: B rows in this forward, T new tokens per row, S keys visible (cache + new),
K key/value heads, E head dim.

A running request owns one row ("slot") of every buffer; its cache length is tracked by the
engine, so rolling back rejected speculative tokens is just a shorter length (stale entries past
it are masked out and later overwritten). The engine keeps running requests in rows 0..n-1 so
every forward reads plain views of the buffers, never gathered copies.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, slots: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str):
        self.slots, self.capacity = slots, capacity
        shape = (slots, kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.device = torch.device(device)
        self._arange = torch.arange(capacity, device=device)
        self._heads_1K1 = torch.arange(kv_heads, device=device)[None, :, None]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def batch(self, row0: int, starts: list[int], num_new: int) -> "CacheBatch":
        """A view for one forward over rows row0..row0+len(starts)-1, each writing `num_new`
        tokens from its own start position."""
        return CacheBatch(self, row0, starts, num_new)

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` cached positions of row `src` into row `dst` (compaction)."""
        if length > 0:
            for buf in (*self.k, *self.v):
                buf[dst, :, :length] = buf[src, :, :length]


class CacheBatch:
    """What the model's attention calls (`update`), plus the positions and mask of this forward.

    Built once per forward and shared by every layer (and the MTP layer), so masks and index
    tensors are made once, not per layer.
    """

    def __init__(self, cache: KVCache, row0: int, starts: list[int], num_new: int):
        B, T = len(starts), num_new
        self.cache, self.row0, self.row1, self.T = cache, row0, row0 + B, T
        end = max(starts) + T
        if end > cache.capacity:
            raise ValueError(f"KV cache overflow: position {end} > capacity {cache.capacity}")
        self.S = end
        dev = cache.device
        self.uniform = min(starts) == max(starts)
        self.start = starts[0]
        ar_T = cache._arange[:T]
        if self.uniform:
            self.position_ids = (ar_T + self.start).expand(B, T)
        else:
            start_B = torch.tensor(starts, device=dev)
            self.position_ids = start_B[:, None] + ar_T  # [B, T]
            # (row, head, position) indices into the whole buffer: an in-place index_put_ on it,
            # which a compiled step keeps in place (on a row slice it copied every row's capacity)
            self._index = (torch.arange(row0, row0 + B, device=dev)[:, None, None], cache._heads_1K1,
                           self.position_ids[:, None, :])
        # With equal starts, a single new token sees every key up to it, and a fresh prefill is
        # plain causal: both are SDPA's mask-free paths. Otherwise key j is visible to query t
        # of a row iff j <= that query's position.
        if self.uniform and (T == 1 or self.start == 0):
            self.mask = None
        else:
            self.mask = (cache._arange[:end] <= self.position_ids[..., None]).unsqueeze(1)  # [B,1,T,S]

    def update(self, layer_idx: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kb = self.cache.k[layer_idx][self.row0:self.row1]
        vb = self.cache.v[layer_idx][self.row0:self.row1]
        if self.uniform:
            s = self.start
            kb[:, :, s:s + self.T] = k_BKTE
            vb[:, :, s:s + self.T] = v_BKTE
        else:
            self.cache.k[layer_idx].index_put_(self._index, k_BKTE)
            self.cache.v[layer_idx].index_put_(self._index, v_BKTE)
        return kb[:, :, :self.S], vb[:, :, :self.S]
