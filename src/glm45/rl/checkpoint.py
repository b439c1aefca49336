"""RL checkpoints: the policy, the optimizer, and everything the loop needs to continue.

Layout of `<out>/checkpoints/step_00000040/`:
  model/        the policy as a Hugging Face directory with its tokenizer (serve or evaluate it as is)
  trainer.pt    optimizer state and weight version
  state.json    step, rollout counters, the data buffer (prompt position, group counter, requeued
                prompts, stored groups), curriculum and temperature state, metrics so far
Written into `.tmp-step_*` and renamed when complete, so a `step_*` directory is never partial.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from glm45.rl.errors import RLError

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "state.json"


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = _complete(Path(root))
    return found[-1] if found else None


def save_checkpoint(root: str | os.PathLike, step: int, *, model: Any, tokenizer: Any, trainer_state: dict[str, Any],
                    state: dict[str, Any], keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "model", tokenizer=tokenizer)
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _complete(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(model directory, trainer state, loop state) of a checkpoint."""
    path = Path(path)
    if not (path / STATE_FILE).is_file() or not (path / "model" / "config.json").is_file():
        raise RLError(f"{path} is not a complete RL checkpoint (needs {STATE_FILE} and model/)")
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except json.JSONDecodeError as e:
        raise RLError(f"{path / STATE_FILE} is not valid JSON: {e}") from None
    trainer_state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    return path / "model", trainer_state, state
