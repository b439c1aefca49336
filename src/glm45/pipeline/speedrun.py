"""`glm45 speedrun`: the whole GLM-4.5 system at toy scale, stage by stage, then a report card.

Stages: corpus → tokenizer → shards (stages_data) → pretrain → midtrain (stages_train) → sft → rl
(stages_post); each model stage ends with its evaluation (evals), and `<out>/final` links to the
last model trained. Budgets: `budget.FULL` (≤ 30 minutes on 2 CPU cores) and `budget.QUICK`.

Each stage writes `<out>/<stage>/summary.json` when it finishes; a stage whose summary says
"done" is skipped on the next run, so an interrupted speedrun resumes where it stopped. A stage
whose capability is not in this build yet is recorded as "missing" (with the reason) and the
stages that need its output are skipped, so the pipeline always runs end to end.
"""

from __future__ import annotations

import json
import os
import resource
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from glm45.pipeline.budget import FULL, QUICK, Budget
from glm45.pipeline.report import make_report
from glm45.pipeline.stages_data import stage_corpus, stage_shards, stage_tokenizer
from glm45.pipeline.stages_post import stage_rl, stage_sft
from glm45.pipeline.stages_train import stage_midtrain, stage_pretrain
from glm45.runtime import check_dtype_name, default_device, dtype_name, resolve_dtype


class StageUnavailable(RuntimeError):
    """This stage's capability is not in this build (the report lists it as missing)."""


@dataclass
class SpeedrunConfig:
    out: str = "runs/speedrun"
    preset: str = "nano"
    quick: bool = False
    seed: int = 0
    threads: int = 1  # torch CPU threads: on a shared 2-core CPU one thread is as fast and never stalls
    # Training compute dtype: "auto" (bf16 autocast where runtime's probe finds it fast, else
    # fp32), "bfloat16" or "float32". run_speedrun resolves "auto" once and records the choice.
    dtype: str = "auto"

    def __post_init__(self) -> None:
        check_dtype_name(self.dtype, "speedrun dtype")

    @property
    def budget(self) -> Budget:
        return QUICK if self.quick else FULL

    @property
    def vocab_size(self) -> int:
        from glm45.config import ModelConfig

        return ModelConfig.preset(self.preset).vocab_size


@dataclass
class Stage:
    name: str
    run: Callable[[SpeedrunConfig, Path], dict[str, Any]]  # returns summary fields (metrics, tokens, …)
    needs: tuple[str, ...] = ()


STAGES: list[Stage] = [
    Stage("corpus", stage_corpus),
    Stage("tokenizer", stage_tokenizer, needs=("corpus",)),
    Stage("shards", stage_shards, needs=("tokenizer",)),
    Stage("pretrain", stage_pretrain, needs=("shards",)),
    Stage("midtrain", stage_midtrain, needs=("pretrain",)),
    Stage("sft", stage_sft, needs=("midtrain",)),
    Stage("rl", stage_rl, needs=("sft",)),
]


def _write_summary(stage_dir: Path, summary: dict[str, Any]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(stage_dir / "summary.json")


def _status(stage_dir: Path) -> str | None:
    try:
        return json.loads((stage_dir / "summary.json").read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def _link_final(root: Path, stages: list[Stage]) -> None:
    """`<root>/final` → the model of the last finished stage that has one."""
    for stage in reversed(stages):
        try:
            summary = json.loads((root / stage.name / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("status") == "done" and summary.get("model"):
            final = root / "final"
            if final.is_symlink() or final.exists():
                final.unlink()
            final.symlink_to(os.path.relpath(Path(summary["model"]).resolve(), root.resolve()))
            return


def run_speedrun(cfg: SpeedrunConfig, stages: list[Stage] | None = None, log=print) -> Path:
    import torch

    stages = STAGES if stages is None else stages
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    # One probe for the whole run (at the run's thread count), so every stage trains alike.
    cfg = replace(cfg, dtype=dtype_name(resolve_dtype(cfg.dtype, default_device())))
    (root / "speedrun.json").write_text(json.dumps(asdict(cfg), indent=2))
    try:
        _run_stages(cfg, stages, root, log)
    finally:
        torch.set_num_threads(threads)
    _link_final(root, stages)
    return make_report(root, [s.name for s in stages],
                       title=f"glm45 speedrun ({cfg.preset}, {cfg.dtype}" + (", quick)" if cfg.quick else ")"))


def _run_stages(cfg: SpeedrunConfig, stages: list[Stage], root: Path, log) -> None:
    for stage in stages:
        stage_dir = root / stage.name
        if _status(stage_dir) == "done":
            log(f"[{stage.name}] done already, skipped")
            continue
        blocked = [n for n in stage.needs if _status(root / n) != "done"]
        if blocked:
            _write_summary(stage_dir, {"stage": stage.name, "status": "skipped",
                                       "note": f"needs {', '.join(blocked)}"})
            log(f"[{stage.name}] skipped: needs {', '.join(blocked)}")
            continue
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        stage_dir.mkdir(parents=True, exist_ok=True)
        try:
            fields = stage.run(cfg, stage_dir) or {}
            status = "done"
        except StageUnavailable as e:
            fields, status = {"note": f"not in this build yet: {e}"}, "missing"
        except Exception as e:  # one broken stage must not hide the others in the report
            (stage_dir / "error.txt").write_text(traceback.format_exc())
            fields, status = {"note": f"{type(e).__name__}: {e}"}, "failed"
        wall = time.perf_counter() - t0
        summary = {"stage": stage.name, "status": status, "wall_s": round(wall, 2),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **fields}
        if summary.get("tokens") and "tokens_per_s" not in summary:
            summary["tokens_per_s"] = round(summary["tokens"] / max(wall, 1e-9), 1)
        _write_summary(stage_dir, summary)
        log(f"[{stage.name}] {status} in {wall:.1f}s" + (f": {fields.get('note')}" if status != "done" else ""))
