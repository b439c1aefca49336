"""The speedrun's pre-training and mid-training stages, on `glm45.train.run` (what `glm45 pretrain`
and `glm45 midtrain` run), each followed by the held-out text evaluation.

Paper §2.2–2.4 at toy scale: pre-training is the two concat-packed stages (general documents,
then code / math / science up-sampled) at the shortest length; mid-training continues the same
optimizer state and cosine schedule on the three best-fit stages (repo-level code, synthetic
reasoning, long documents and agent trajectories) at 4× and 8× the length, with RoPE's base
moved from 10,000 to 1,000,000 as it starts.

Each stage trains into `<stage>/train/` (checkpoints, metrics, the Hugging Face export `hf/`): an
interrupted stage resumes from its newest checkpoint, a finished one is not trained again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from glm45.pipeline.evals import cached, text_metrics


def _trained(train_dir: Path) -> dict[str, Any] | None:
    """The training summary of a finished run in `train_dir`, else None."""
    try:
        summary = json.loads((train_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("status") == "done" and (train_dir / "hf" / "config.json").is_file() else None


def _train(cfg, out: Path, kind: str, **overrides: Any) -> dict[str, Any]:
    from glm45.train.run import RunConfig, run_training

    train_dir = out / "train"
    summary = _trained(train_dir)
    if summary is None:
        b = cfg.budget
        run = RunConfig(kind=kind, data=str(out.parent / "shards"), out=str(train_dir), preset=cfg.preset,
                        tokenizer=str(out.parent / "tokenizer"), total_tokens=b.pretrain_tokens + b.midtrain_tokens,
                        autocast=cfg.dtype, micro_batch=8 if kind == "pretrain" else 2, checkpoint_every=20,
                        keep_checkpoints=1, resume=True, seed=cfg.seed, progress=True, **overrides)
        summary = run_training(run)
    shutil.copyfile(train_dir / "metrics.jsonl", out / "metrics.jsonl")  # the report's loss curves
    return summary


def _fields(summary: dict[str, Any], evals: dict[str, Any], tokens_before: int = 0) -> dict[str, Any]:
    m = summary.get("metrics", {})
    metrics = {"train_loss": m.get("loss"), "train_mtp_loss": m.get("mtp_loss"),
               "max_balance_violation": m.get("max_violation"), **evals}
    return {"tokens": summary["tokens"] - tokens_before, "tokens_per_s": summary["tokens_per_s"], "metrics": metrics,
            "model": str(Path(summary["export"])),
            "note": f"{summary['steps']} steps, RoPE base {summary.get('rope_theta'):g}"}


def stage_pretrain(cfg, out: Path) -> dict[str, Any]:
    b = cfg.budget
    summary = _train(cfg, out, "pretrain", tokens=b.pretrain_tokens, batch_tokens=b.pretrain_batch_tokens)
    evals = cached(out / "eval.json", lambda: text_metrics(out / "train" / "hf", out.parent, b))
    return _fields(summary, evals)


def stage_midtrain(cfg, out: Path) -> dict[str, Any]:
    b = cfg.budget
    pre = out.parent / "pretrain" / "train"
    # The batch size, like the LR schedule, carries on from pre-training's state.
    summary = _train(cfg, out, "midtrain", init=str(pre), tokens=b.midtrain_tokens)
    evals = cached(out / "eval.json", lambda: text_metrics(out / "train" / "hf", out.parent, b))
    before = json.loads((pre / "summary.json").read_text())["tokens"]
    return _fields(summary, evals, tokens_before=before)
