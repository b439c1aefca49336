"""Continuous-batching bookkeeping: a FCFS waiting queue and the running rows of the KV cache.

Requests join (are admitted) and leave (finish or abort) between engine steps. Running
requests always occupy rows 0..n-1 of the cache in admission order; when some leave, later
rows are moved down into the holes so every forward reads contiguous cache rows.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar


class Schedulable(Protocol):
    row: int
    finished: bool

    @property
    def num_prompt_tokens(self) -> int: ...

    @property
    def cached(self) -> int: ...


R = TypeVar("R", bound=Schedulable)


class Scheduler(Generic[R]):
    def __init__(self, max_batch_size: int, max_prefill_tokens: int):
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[R] = deque()
        self.running: list[R] = []  # running[i].row == i

    def add(self, req: R) -> None:
        self.waiting.append(req)

    def admit(self) -> list[R]:
        """Move waiting requests into free rows (at least one if a row is free), keeping the
        padded prefill batch (requests x longest prompt) within `max_prefill_tokens`."""
        admitted: list[R] = []
        longest = 0
        while self.waiting and len(self.running) + len(admitted) < self.max_batch_size:
            req = self.waiting[0]
            longest_if = max(longest, req.num_prompt_tokens)
            if admitted and longest_if * (len(admitted) + 1) > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            longest = longest_if
            req.row = len(self.running) + len(admitted)
            admitted.append(req)
        self.running.extend(admitted)
        return admitted

    def remove_waiting(self, req: R) -> bool:
        try:
            self.waiting.remove(req)
            return True
        except ValueError:
            return False

    def compact(self, move_row) -> list[R]:
        """Drop finished requests from the running rows, moving survivors down into the holes
        with `move_row(src, dst, length)`. Returns the requests that left."""
        if not any(r.finished for r in self.running):
            return []
        left = [r for r in self.running if r.finished]
        survivors = [r for r in self.running if not r.finished]
        for i, req in enumerate(survivors):  # dst < src, in order: never overwrites a survivor
            if req.row != i:
                move_row(req.row, i, req.cached)
                req.row = i
        self.running = survivors
        return left

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)
