"""Training stages: which shard directories to train on, in what order, for how many tokens,
with which RoPE base — and the loop that runs them one after another on one Trainer.

Paper §2.3–2.4: pre-training at 4K (concat packing), then mid-training stages at 32K and 128K
(best-fit packing), with RoPE's base moved from 10,000 to 1,000,000 when the sequence length is
first extended. The data pipeline writes one shard directory per stage (`glm45 data stage`,
the speedrun's `shards/`); each directory's index.json gives its sequence length, packing and
size. The learning-rate, batch-size, MTP-weight and bias-rate schedules are functions of the
tokens seen, which carry over from stage to stage, so the schedules run on across them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from glm45.data.shards import load_index

# The data pipeline's preset stages in paper order (glm45.data.stages.preset_stages); other
# names sort after them, by sequence length and name.
PAPER_STAGE_ORDER = ("pretrain_general", "pretrain_upsample", "mid_repo_code", "mid_reasoning", "mid_long_agent")


class StageError(ValueError):
    """Stage data that cannot be found or planned."""


@dataclass
class StageData:
    """One shard directory, as its index.json describes it."""

    name: str
    path: str
    seq_len: int
    packing: str
    rows: int
    vocab_size: int
    pad_id: int

    @property
    def epoch_tokens(self) -> int:
        """Positions in one pass over the rows (what the trainer counts as tokens seen)."""
        return self.rows * self.seq_len


@dataclass
class TrainStage:
    name: str
    data: str  # shard directory
    tokens: int  # token budget of the stage
    seq_len: int
    packing: str
    rope_theta: float | None = None  # RoPE base set when the stage starts; None keeps the model's


def read_stage_data(path: str | os.PathLike, name: str | None = None) -> StageData:
    index = load_index(path)
    if index.get("num_rows", 0) < 1:
        raise StageError(f"{path}: the shard directory holds no rows")
    stage_name = name or (index.get("stage") or {}).get("name") or Path(path).name
    return StageData(name=stage_name, path=str(path), seq_len=int(index["seq_len"]), packing=index["mode"],
                     rows=int(index["num_rows"]), vocab_size=int(index["vocab_size"]), pad_id=int(index["pad_id"]))


def _order_key(s: StageData) -> tuple:
    paper = PAPER_STAGE_ORDER.index(s.name) if s.name in PAPER_STAGE_ORDER else len(PAPER_STAGE_ORDER)
    return (s.seq_len, s.packing != "concat", paper, s.name)


def discover_stages(path: str | os.PathLike) -> list[StageData]:
    """A shard directory (one stage) or a directory of shard directories (one per stage, named
    after it), ordered by sequence length, concat before best-fit, then paper order and name."""
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"{path}: no such data directory")
    if (path / "index.json").is_file():
        return [read_stage_data(path)]
    found = [read_stage_data(d, d.name) for d in sorted(path.iterdir()) if (d / "index.json").is_file()]
    if not found:
        raise StageError(f"{path}: neither a shard directory (index.json) nor a directory of them; build shards "
                         "with `glm45 data stage SPEC --tokenizer T --out DIR` or pass a stage spec file")
    return sorted(found, key=_order_key)


def select_stages(found: list[StageData], names: list[str] | None = None,
                  packing: str | None = None) -> list[StageData]:
    """The stages named in `names` (in that order), or those with `packing` (in found order)."""
    if names:
        by_name = {s.name: s for s in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise StageError(f"no stage data named {missing}; found {sorted(by_name)}")
        return [by_name[n] for n in names]
    chosen = [s for s in found if packing is None or s.packing == packing]
    if not chosen:
        raise StageError(f"no stage with {packing} packing among {[s.name for s in found]}; "
                         "name the stages to train with --stages")
    return chosen


def plan_stages(stages: list[StageData], *, tokens: int | None = None, long_rope_theta: float = 1e6,
                base_seq_len: int | None = None) -> list[TrainStage]:
    """Token budgets and RoPE bases of `stages`.

    Without `tokens` each stage gets one epoch of its data; with it, the budget is split in
    proportion to the stages' sizes. Stages longer than `base_seq_len` (default: the first
    stage's length) get `long_rope_theta`: RoPE's base moves at the first long stage and stays.
    """
    if not stages:
        raise StageError("no stages to train")
    if tokens is not None and tokens <= 0:
        raise StageError(f"the token budget must be > 0, got {tokens}")
    base = stages[0].seq_len if base_seq_len is None else base_seq_len
    sizes = [s.epoch_tokens for s in stages]
    total = sum(sizes)
    plan, long_seen = [], False
    for s, size in zip(stages, sizes):
        budget = size if tokens is None else max(s.seq_len, round(tokens * size / total))
        long_seen = long_seen or s.seq_len > base
        plan.append(TrainStage(name=s.name, data=s.path, tokens=budget, seq_len=s.seq_len, packing=s.packing,
                               rope_theta=long_rope_theta if long_seen else None))
    return plan


def run_stages(trainer: Any, stages: list[TrainStage], make_loader: Callable[[TrainStage], Iterable]) -> None:
    """Train each stage in turn until its budget (checkpointing at each stage's end). A trainer
    resumed inside one of these stages continues it (the loader where it was) and skips those
    before; otherwise all run. The caller writes the run's summary."""
    names = [s.name for s in stages]
    start = names.index(trainer.state.stage) if trainer.state.stage in names else 0
    for stage in stages[start:]:
        trainer.start_stage(stage.name, make_loader(stage), rope_theta=stage.rope_theta)
        end = trainer.state.tokens - trainer.state.stage_tokens + stage.tokens
        trainer.train(until_tokens=end, write_summary=False)
