"""The training data loader: deterministic, resumable, split across ranks.

Each epoch visits the rows of a shard directory in a permutation drawn from (seed, epoch);
rank r of W takes every W-th row of it (perm[r::W]), so within an epoch every row goes to
exactly one rank. Batches are cut from each rank's endless stream of epochs, so all ranks
yield the same number of batches per step and a batch may span an epoch boundary.
`state_dict()` is (epoch, offset into this rank's share of that epoch) plus what must match
on resume (seed, world size, number of rows); it goes into training checkpoints, and
`load_state_dict` makes the next batches exactly those the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch

from glm45.data.document import DataError
from glm45.data.shards import PackedDataset


class PackedLoader:
    def __init__(self, path: str | os.PathLike | PackedDataset, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, epochs: int | None = None, drop_last: bool = False):
        self.dataset = path if isinstance(path, PackedDataset) else PackedDataset(path)
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"need 0 <= rank < world_size (got rank={rank}, world_size={world_size})")
        if len(self.dataset) < world_size:
            raise DataError(f"{len(self.dataset)} rows cannot feed {world_size} ranks")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle, self.epochs, self.drop_last = shuffle, epochs, drop_last
        self.epoch, self.offset = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # cached (epoch, this rank's rows)

    def rows_of_epoch(self, epoch: int) -> np.ndarray:
        """Global row indices this rank reads in `epoch`, in order."""
        if self._order is None or self._order[0] != epoch:
            n = len(self.dataset)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order = (epoch, order[self.rank::self.world_size])
        return self._order[1]

    @property
    def rows_per_epoch(self) -> int:
        """Rows this rank reads per epoch (ranks differ by at most one)."""
        n = len(self.dataset)
        return n // self.world_size + (self.rank < n % self.world_size)

    def __len__(self) -> int:
        """Batches left in a finite run (the last one partial unless drop_last)."""
        if self.epochs is None:
            raise TypeError("an endless loader (epochs=None) has no length")
        left = max(0, (self.epochs - self.epoch) * self.rows_per_epoch - self.offset)
        return left // self.batch_size if self.drop_last else -(-left // self.batch_size)

    def _next_indices(self) -> list[int] | None:
        idx: list[int] = []
        epoch, offset = self.epoch, self.offset
        while len(idx) < self.batch_size:
            if self.epochs is not None and epoch >= self.epochs:
                break
            rows = self.rows_of_epoch(epoch)
            take = rows[offset:offset + self.batch_size - len(idx)]
            idx.extend(take.tolist())
            offset += len(take)
            if offset >= len(rows):
                epoch, offset = epoch + 1, 0
        if not idx or (self.drop_last and len(idx) < self.batch_size):
            return None
        self.epoch, self.offset = epoch, offset
        return idx

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while (idx := self._next_indices()) is not None:
            examples = [self.dataset.example(i) for i in idx]
            yield {k: torch.from_numpy(np.stack([e[k] for e in examples]).astype(np.int64)) for k in examples[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "num_rows": len(self.dataset), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "world_size", "num_rows"):
            mine = len(self.dataset) if key == "num_rows" else getattr(self, key)
            if state.get(key) != mine:
                raise DataError(f"loader state has {key}={state.get(key)!r} but this loader has {mine!r}; "
                                "resume with the same data, seed and world size")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
