"""The speedrun's post-training stages: SFT (`glm45.sft.train.finetune`) and RL (`glm45.rl.loop`),
each followed by the held-out text and chat evaluations.

- SFT (paper §3.1): the built-in cold-start data of the three experts' domains
  (`glm45.sft.builtin.reference_samples`): arithmetic with worked reasoning, tool-calling
  trajectories of every kind with their tools (`SFT_AGENT_KINDS`), short direct answers; 30% of
  samples rendered with thinking off, so one model learns both modes (hybrid reasoning).
- RL (§3.2–3.4): GRPO without KL, clip-higher, dynamic sampling, on verifiable tasks: arithmetic
  (the boxed answer, thinking on) and single tool-call turns (the strict step-wise
  `function_call` reward). Tool prompts carry the tool schemas (~500 tokens), so they are a
  quarter of the mix to keep a step affordable on a CPU. RL's tool turns are those that need
  calls (SFT teaches the others): for a policy whose calls are rarely valid, answering without
  a call was the only reward on tool prompts, and RL taught it to stop calling tools. RL's
  arithmetic is the easiest level, where the SFT model is right often enough for groups to
  differ (GRPO learns only from those); the held-out check keeps levels 1–2.

Each trains into `<stage>/train/` and resumes from its checkpoints when interrupted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from glm45.pipeline.evals import cached, chat_metrics, load, text_metrics

NON_THINKING_RATIO = 0.3
TOOL_SHARE = 0.25
# Tool-task kinds of the SFT data, a kind listed k times drawn k times as often. One in five
# trajectories opens without a call (irrelevant request, or a question back to the user): at
# two in five (every kind once) the nano model asked back on 15% of requests that needed a
# call. Valid first calls on 120 held-out tasks with two distractor tools, same base and steps:
# 0.75 with every kind once, 0.73 with single/multi/parallel twice, 0.85 with this mix (with
# one distractor, as the speedrun checks: 0.758 for both); run-to-run spread is large at this
# size (docs/LOG.md, 2026-12-07 session 15).
SFT_AGENT_KINDS = ("single",) * 3 + ("multi",) * 2 + ("parallel",) * 3 + ("irrelevant", "multiturn")


def _done(train_dir: Path, model_dir: str) -> dict[str, Any] | None:
    try:
        summary = json.loads((train_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("status") == "done" and (train_dir / model_dir / "config.json").is_file() else None


def _evaluate(out: Path, model_dir: Path, cfg) -> dict[str, Any]:
    return cached(out / "eval.json", lambda: {**text_metrics(model_dir, out.parent, cfg.budget),
                                              **chat_metrics(model_dir, cfg.budget, cfg.seed)})


def stage_sft(cfg, out: Path) -> dict[str, Any]:
    from glm45.sft.builtin import reference_samples
    from glm45.sft.dataset import SFTDataConfig
    from glm45.sft.train import SFTTrainConfig, finetune

    b, train_dir = cfg.budget, out / "train"
    summary = _done(train_dir, "model")
    if summary is None:
        samples = (reference_samples("reasoning", b.sft_reasoning, cfg.seed, difficulty=(1, 2))
                   + reference_samples("agent", b.sft_agent, cfg.seed, n_distractors=1, agent_kinds=SFT_AGENT_KINDS)
                   + reference_samples("general", b.sft_general, cfg.seed))
        train = SFTTrainConfig(max_steps=b.sft_steps, batch_size=b.sft_batch, lr=b.sft_lr,
                               warmup_steps=max(1, b.sft_steps // 10),
                               seed=cfg.seed, dtype=cfg.dtype, checkpoint_every=25, resume=True, progress=True)
        data = SFTDataConfig(seq_len=b.sft_seq_len, non_thinking_ratio=NON_THINKING_RATIO, seed=cfg.seed)
        summary = finetune(out.parent / "midtrain" / "train" / "hf", samples, train_dir, train, data)
    shutil.copyfile(train_dir / "metrics.jsonl", out / "metrics.jsonl")
    model_dir = train_dir / "model"
    metrics = {"train_loss": summary["final_loss"], **_evaluate(out, model_dir, cfg)}
    return {"tokens": summary["tokens"], "tokens_per_s": summary["tokens_per_s"], "metrics": metrics,
            "model": str(model_dir), "note": f"{summary['steps']} steps on {summary['rows']} packed rows"}


def rl_tasks(n: int, seed: int, split: str) -> list[dict]:
    from glm45.rl.task_sets import CALL_KINDS, arithmetic_tasks, tool_tasks

    n_tools = round(n * TOOL_SHARE)
    unique = split == "test"
    levels = [1, 2] if split == "test" else [1]
    return (arithmetic_tasks(n - n_tools, seed, split=split, difficulty=levels, thinking=True, unique=unique)
            + tool_tasks(n_tools, seed, split=split, kinds=CALL_KINDS, unique=unique)[:n_tools])


def stage_rl(cfg, out: Path) -> dict[str, Any]:
    from glm45.rl.loop import RLConfig, RLRun
    from glm45.rl.rollout import RolloutConfig
    from glm45.rl.trainer import TrainerConfig

    b, train_dir = cfg.budget, out / "train"
    summary = _done(train_dir, "model")
    if summary is None:
        # The GRPO trainer stays fp32 whatever cfg.dtype says: its log-probs are compared with the
        # fp32 rollout engine's, and the stage's time is rollouts (measured: bf16 no faster, and
        # held-out gains +0 / +3.1 points against +3.9 / +3.9 in fp32 from the same SFT models).
        model, tokenizer = load(out.parent / "sft" / "train" / "model")
        rl = RLConfig(out=str(train_dir), steps=b.rl_steps, prompts_per_step=b.rl_prompts_per_step,
                      rollout=RolloutConfig(group_size=b.rl_group_size, max_tokens=b.rl_max_tokens, seed=cfg.seed),
                      trainer=TrainerConfig(lr=1e-4, micro_batch_size=16, dtype="float32"),
                      dynamic_sampling=b.rl_dynamic_sampling, max_rollout_rounds=2, eval_every=0,
                      checkpoint_every=5, max_seq_len=1024, seed=cfg.seed, progress=True)
        train = rl_tasks(8 * b.rl_steps * b.rl_prompts_per_step, cfg.seed, "train")
        summary = RLRun(rl, model, tokenizer, train, rl_tasks(b.rl_eval_tasks, cfg.seed + 1, "test")).run()
    shutil.copyfile(train_dir / "metrics.jsonl", out / "metrics.jsonl")
    model_dir = train_dir / "model"
    before, after = summary.get("eval_first") or {}, summary.get("eval_last") or {}
    metrics = {"rl_reward_first": summary["reward_first"], "rl_reward_last": summary["reward_last"],
               "rl_heldout_reward_before": before.get("eval_reward"),
               "rl_heldout_reward_after": after.get("eval_reward"),
               **_evaluate(out, model_dir, cfg)}
    generated = summary["counters"]["tokens_generated"]
    return {"tokens": generated, "tokens_per_s": round(generated / max(summary["wall_s_this_run"], 1e-9), 1),
            "metrics": metrics, "model": str(model_dir),
            "note": f"{summary['steps']} GRPO steps, {summary['counters']['samples_generated']} samples generated"}
