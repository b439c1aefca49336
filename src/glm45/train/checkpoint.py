"""Training checkpoints: written atomically, found again, read back.

Layout of `<out>/checkpoints/step_00000120/`:
  model.pt        full (unsharded) model state dict, router balance biases included
  optimizer.pt    full optimizer state dict (parameters keyed by name)
  trainer.json    step, tokens seen, stage, RoPE base, schedule, world size, ...
  rank00000.pt    per rank: data-loader state and RNG states (torch, CUDA, numpy, python)
Every file goes into `.tmp-step_00000120/` first; the main rank renames the finished
directory into place, so a `step_*` directory is always complete and a run killed while
writing leaves only a `.tmp-*` directory, which is ignored and cleared on the next save.
Full state dicts (rather than per-rank shards) keep one format for every parallel mode, and
a checkpoint resumes under any of them with the same world size.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glm45.train.distributed import DistInfo

STEP_DIR = re.compile(r"^step_(\d{8})$")
META_FILE = "trainer.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not fit this run."""


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: str | os.PathLike, step: int, *, model_state: dict[str, Any] | None,
                    optimizer_state: dict[str, Any] | None, meta: dict[str, Any], rank_state: dict[str, Any],
                    info: DistInfo, keep: int = 2) -> Path:
    """Write one checkpoint (collective: every rank calls it). The main rank writes the model,
    optimizer and meta; each rank writes its own loader/RNG state. Returns the final path.
    Keeps the newest `keep` checkpoints (0 = keep all)."""
    root = Path(root)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    info.barrier()
    if info.is_main:
        torch.save(model_state, tmp / "model.pt")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    torch.save(rank_state, tmp / f"rank{info.rank:05d}.pt")
    info.barrier()
    if info.is_main:
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep > 0:
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    info.barrier()
    return final


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path) / META_FILE
    if not p.is_file():
        raise CheckpointError(f"{path}: not a training checkpoint (no {META_FILE})")
    return json.loads(p.read_text())


def load_checkpoint(path: str | os.PathLike, rank: int | None) -> tuple[dict, dict, dict[str, Any], dict | None]:
    """(model state, optimizer state, meta, rank `rank`'s state) of a checkpoint, on the CPU;
    with `rank` None the per-rank state is not read (and None is returned for it)."""
    path = Path(path)
    meta = read_meta(path)
    rank_state = None
    if rank is not None:
        rank_file = path / f"rank{rank:05d}.pt"
        if not rank_file.is_file():
            raise CheckpointError(f"{path} has no state for rank {rank} (it was written by "
                                  f"{meta.get('world_size', '?')} processes); resume with the same number")
        rank_state = torch.load(rank_file, map_location="cpu", weights_only=True)
    load = lambda name: torch.load(path / name, map_location="cpu", weights_only=True)  # noqa: E731
    return load("model.pt"), load("optimizer.pt"), meta, rank_state
