"""Prompt sources for the data buffer: where the tasks to roll out come from.

A source hands out prompts (task records) in order and can save and restore its position, so an
RL run resumed from a checkpoint continues with the prompt it would have drawn next. Two kinds:

- `ListSource`: a finite sequence, visited in epochs (optionally reshuffled each epoch with a
  seed), for a fixed number of epochs or forever.
- `IterableSource`: any iterable (a generator of synthetic tasks, a file reader). It can only go
  forward, so restoring a state means building a fresh source over the same stream and letting
  `load_state_dict` skip the prompts already consumed.

`glm45.rl.curriculum.DifficultyCurriculum` is a source too (it draws from its current pool).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from glm45.rl.errors import RLError

__all__ = ["DataSource", "IterableSource", "ListSource", "as_source"]


@runtime_checkable
class DataSource(Protocol):
    def take(self, n: int) -> list[Any]:
        """Up to `n` next prompts (fewer only when the source is exhausted)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ListSource:
    def __init__(self, items: Sequence[Any], *, shuffle: bool = False, seed: int = 0, epochs: int | None = None) -> None:
        if epochs is not None and epochs < 1:
            raise RLError(f"epochs must be >= 1 or None (forever), got {epochs}")
        self.items = items
        self.shuffle = shuffle
        self.seed = seed
        self.epochs = epochs
        self.epoch = 0
        self.position = 0  # within the current epoch's order
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(f"glm45.rl.ListSource/{self.seed}/{self.epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n and self.items:
            if self.epochs is not None and self.epoch >= self.epochs:
                break
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._make_order()
                continue
            out.append(self.items[self._order[self.position]])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "num_items": len(self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_items") != len(self.items):
            raise RLError(f"source state is for {state.get('num_items')} items, this source has {len(self.items)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._make_order()


class IterableSource:
    def __init__(self, items: Iterable[Any]) -> None:
        self._it: Iterator[Any] = iter(items)
        self.consumed = 0

    def take(self, n: int) -> list[Any]:
        out = list(itertools.islice(self._it, n))
        self.consumed += len(out)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        target = int(state["consumed"])
        if target < self.consumed:
            raise RLError(f"cannot rewind an iterable source from {self.consumed} to {target} prompts; "
                          f"load the state into a fresh source over the same stream")
        skipped = len(self.take(target - self.consumed))
        if self.consumed != target:
            raise RLError(f"the stream ended after {self.consumed} prompts while restoring a state "
                          f"that had consumed {target} ({skipped} skipped)")


def as_source(source: DataSource | Sequence[Any] | Iterable[Any]) -> DataSource:
    """A sequence becomes a ListSource (cycled forever), another iterable an IterableSource."""
    if isinstance(source, DataSource):
        return source
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return ListSource(source)
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        return IterableSource(source)
    raise RLError(f"a data source must be a sequence or an iterable of prompts, got {type(source).__name__}")
