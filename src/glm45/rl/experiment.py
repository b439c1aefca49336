"""The headline RL experiment on this CPU: `python -m glm45.rl.experiment --out runs/rl-exp`.

1. A random `tiny` checkpoint (`glm45 init`).
2. Cold-start SFT on arithmetic (difficulty 1, with worked reasoning) through `glm45.sft`. The
   cold-start data is imperfect the way distilled data is: in a fraction `noise` of the samples
   the final answer is transcribed one too high (the worked steps stay right), so the SFT model
   learns to copy its own result only part of the time.
3. GRPO from that model with the verifiable arithmetic reward (sync mode), twice from the same
   start: token-weighted mean loss and sequence-mean loss (paper Figure 7, left).
4. One round of iterative self-distillation (§3.3.2): the token-mean policy's verified answers
   replace the cold-start data, SFT re-runs from the same base, and RL continues from it.
5. Held-out accuracy (greedy, `test` split: no question shared with training) before and every
   `eval_every` steps; figures `heldout.png` and `reward.png`, numbers in `summary.json`.

Runs single-threaded torch (fastest on a shared CPU) in fp32.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

__all__ = ["figures", "main", "noisy_cold_start"]


def noisy_cold_start(n: int, seed: int, noise: float, difficulty: Any = 1) -> list:
    """Arithmetic SFT samples; in a `noise` fraction the boxed answer is one too high."""
    from glm45.sft.builtin import reference_samples
    from glm45.tasks.arithmetic import final_answer_text

    rng = random.Random(f"glm45.rl.experiment/{seed}")
    docs = reference_samples("reasoning", n, seed, difficulty=difficulty)
    for d in docs:
        if rng.random() < noise:
            d.messages[-1]["content"] = final_answer_text(str(int(d.meta["answer"]) + 1))
            d.meta["corrupted"] = True
    return docs


def _rl(model_dir: Path, out: Path, args: argparse.Namespace, loss_agg: str, train: list, evals: list) -> dict:
    from glm45.rl.grpo import GRPOConfig
    from glm45.rl.loop import RLConfig, RLRun
    from glm45.rl.rollout import RolloutConfig
    from glm45.rl.trainer import TrainerConfig

    cfg = RLConfig(out=str(out), steps=args.steps, prompts_per_step=args.prompts_per_step,
                   rollout=RolloutConfig(group_size=args.group_size, max_tokens=48, seed=args.seed),
                   trainer=TrainerConfig(lr=args.lr, betas=(0.9, 0.999), micro_batch_size=64,
                                         grpo=GRPOConfig(loss_agg=loss_agg)),
                   eval_every=args.eval_every, max_seq_len=160, seed=args.seed)
    return RLRun.from_pretrained(cfg, model_dir, train, evals).run()


def _self_distill(out: Path, args: argparse.Namespace, train: list, evals: list) -> dict:
    """Iterative self-distillation, one round: the token-mean RL policy's verified answers replace
    the noisy cold-start data, SFT re-runs from the same base, and RL continues from there."""
    from glm45.rl.distill import DistillConfig, distill

    agg = args.loss_aggs.split(",")[0]
    t = time.perf_counter()
    cfg = DistillConfig(samples_per_prompt=2, keep_per_prompt=1, max_tokens=48, max_seq_len=160,
                        sft_steps=args.sft_steps, sft_lr=3e-3, sft_seq_len=256, seed=args.seed)
    summary = distill(str(out / f"rl_{agg}" / "model"), str(out / "base"), train, out / "distill" / "sft", cfg)
    t_distill = time.perf_counter() - t
    rl = _rl(Path(summary["model_dir"]), out / "distill" / "rl", args, agg, train, evals)
    return {"distill": summary["distill"], "distill_seconds": t_distill,
            "heldout_by_step": {e["step"]: round(e["eval_reward"], 4) for e in rl["evals"]},
            "heldout_distilled_sft": rl["evals"][0]["eval_reward"], "heldout_end": rl["evals"][-1]["eval_reward"]}


def figures(out: Path, runs: dict[str, Path], title: str, heldout: str = "greedy",
            rollout_temperature: float = 1.0) -> list[str]:
    """`heldout.png` (held-out reward at each evaluated step, measured as `heldout` says) and
    `reward.png` (rollout reward per step, sampled at `rollout_temperature`) in `out`, one line
    per run (label -> the run's directory with its metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glm45.train.metrics import read_metrics

    paths = []
    for name, key, ylabel in (("heldout.png", "eval_reward", f"held-out accuracy ({heldout})"),
                              ("reward.png", "reward_mean", f"rollout reward (T = {rollout_temperature:g})")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for label, run_dir in runs.items():
            rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get(key) is not None]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o-" if key == "eval_reward" else "-",
                    label=label, linewidth=1.2, markersize=3)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(str(out / name))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glm45.rl.experiment", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/rl-experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.5, help="fraction of cold-start answers transcribed wrong")
    p.add_argument("--sft-samples", type=int, default=4000)
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=40, help="RL steps per run")
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--loss-aggs", default="token_mean,seq_mean")
    p.add_argument("--distill-rl-steps", type=int, default=20,
                   help="self-distillation round: RL steps after re-running SFT on the policy's outputs (0: skip)")
    args = p.parse_args(argv)

    import torch

    from glm45.checkpoint.init_cli import init_checkpoint
    from glm45.rl.task_sets import arithmetic_tasks
    from glm45.sft.dataset import SFTDataConfig
    from glm45.sft.train import SFTTrainConfig, finetune

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sft_model = out / "sft" / "model"
    if not (out / "sft" / "summary.json").is_file():
        init_checkpoint("tiny", out / "base", seed=args.seed)
        finetune(out / "base", noisy_cold_start(args.sft_samples, args.seed, args.noise), out / "sft",
                 SFTTrainConfig(max_steps=args.sft_steps, batch_size=8, lr=3e-3, warmup_steps=10, seed=args.seed),
                 SFTDataConfig(seq_len=256, seed=args.seed))
    t_sft = time.perf_counter() - t0
    train = arithmetic_tasks(args.sft_samples, args.seed, difficulty=1)
    evals = arithmetic_tasks(args.n_eval, args.seed + 1, split="test", difficulty=1, unique=True)
    runs, results = {}, {}
    for agg in args.loss_aggs.split(","):
        t = time.perf_counter()
        summary = _rl(sft_model, out / f"rl_{agg}", args, agg, train, evals)
        runs[agg] = out / f"rl_{agg}"
        evals_by_step = {e["step"]: round(e["eval_reward"], 4) for e in summary["evals"]}
        results[agg] = {"heldout_by_step": evals_by_step, "heldout_start": summary["evals"][0]["eval_reward"],
                        "heldout_end": summary["evals"][-1]["eval_reward"], "reward_first": summary["reward_first"],
                        "reward_last": summary["reward_last"], "seconds": time.perf_counter() - t,
                        "samples_per_s": summary["samples_per_s"]}
    if args.distill_rl_steps > 0:
        results["self_distillation"] = _self_distill(out, args, train, evals)
        runs["distilled SFT -> RL"] = out / "distill" / "rl"
    paths = figures(out, runs, "GRPO on arithmetic from a noisy cold start")
    report = {"config": vars(args), "sft_seconds": t_sft, "results": results, "figures": paths,
              "total_seconds": time.perf_counter() - t0}
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
