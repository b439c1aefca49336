"""Seeds, splits and sampling shared by every task family.

Split convention (the same for arithmetic, tool and code tasks):

- A problem belongs to the held-out ``"test"`` split when the BLAKE2b hash of its canonical
  text (the question / user request / prompt) falls in the lowest ``TEST_FRACTION`` of the
  hash range; otherwise it is ``"train"``. Membership depends on the text alone, never on the
  seed, so *no question text can ever appear in both splits*, whatever seeds the callers use.
- Generators draw candidates from ``random.Random(f"glm45.tasks/{family}/{split}/{seed}")``
  and keep those whose text hashes into the requested split. Any integer seed is valid for
  either split; the same ``(seed, split, arguments)`` always gives the same list, and the
  first k items of a list of n are the list of k (prefix-stable).
- Ids read ``{family}-{split}-{seed}-{index}``; two lists with different seeds may share
  questions (sampling with replacement), so an evaluation set is one seed, ``unique=True``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SPLITS = ("train", "test")
TEST_FRACTION = 0.2  # large enough that small template spaces still give a useful test set


class TaskError(ValueError):
    """Bad arguments to a task generator or checker."""


class TaskSpaceExhausted(TaskError):
    """The requested number of problems does not exist under the given constraints."""


def split_of(text: str) -> str:
    """The split that owns ``text``: ``"test"`` for about ``TEST_FRACTION`` of all texts."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10_000
    return "test" if bucket < TEST_FRACTION * 10_000 else "train"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise TaskError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def make_rng(family: str, seed: int, split: str) -> random.Random:
    """The generator's RNG; string seeding is stable across processes and PYTHONHASHSEED."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TaskError(f"seed must be an int, got {seed!r}")
    return random.Random(f"glm45.tasks/{family}/{check_split(split)}/{seed}")


def sample(
    n: int,
    make: Callable[[random.Random, int], T],
    key: Callable[[T], str],
    *,
    family: str,
    seed: int,
    split: str,
    unique: bool,
    patience: int = 5000,
) -> list[T]:
    """Draw ``n`` items with ``make(rng, index)``, keeping those whose ``key`` is in ``split``.

    ``unique`` also rejects a key already drawn. Raises ``TaskSpaceExhausted`` after
    ``patience`` draws in a row without a keeper (a template space too small for ``n``, or a
    split the constraints leave empty) instead of looping forever.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TaskError(f"n must be a non-negative int, got {n!r}")
    rng = make_rng(family, seed, split)
    out: list[T] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        item = make(rng, len(out))
        k = key(item)
        if split_of(k) != split or (unique and k in seen):
            misses += 1
            if misses >= patience:
                what = "distinct " if unique else ""
                raise TaskSpaceExhausted(
                    f"found only {len(out)} {what}{family} problems for split={split!r} (asked for {n}; "
                    f"{patience} draws in a row gave nothing new); widen the settings "
                    f"(difficulty, kinds, families) or pass unique=False"
                )
            continue
        misses = 0
        seen.add(k)
        out.append(item)
    return out


def task_id(family: str, split: str, seed: int, index: int) -> str:
    return f"{family}-{split}-{seed}-{index}"
