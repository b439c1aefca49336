"""`glm45 rl`: GRPO with verifiable rewards on a checkpoint.

    glm45 rl --model DIR --task arithmetic --out runs/rl
    glm45 rl --model DIR --task tools --mode async --rollout-workers 2 --fp8-rollout --out runs/rl-tools
    glm45 rl --model DIR --task arithmetic --rollout-url http://127.0.0.1:8000 --out runs/rl-http
    glm45 rl --model DIR --task arithmetic --mode async --rollout-workers 0 --agent-port 8100 --out runs/rl-agents

Writes metrics.jsonl, summary.json, reward_curve.png, checkpoints/ and model/ into --out; run
the same command again to resume from the newest checkpoint. With --distill-rounds R, each
round's RL policy is distilled into a fresh SFT model (its verified outputs replace the
cold-start data) and RL continues from that model (`glm45.rl.distill`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from glm45.cli import positive_int
from glm45.rl.errors import RLError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--model", required=True, help="starting checkpoint directory (with tokenizer.json)")
    g.add_argument("--task", default="arithmetic", help="task set: arithmetic, tools, tool_agent, search or jsonl:PATH")
    g.add_argument("--eval-task", default=None, help="held-out task set (default: --task on its test split)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--n-train", type=int, default=4000, help="training prompts drawn from the task set")
    g.add_argument("--n-eval", type=int, default=200, help="held-out prompts (0: no evaluation)")
    g.add_argument("--difficulty", default="1", help="arithmetic difficulty 1-5, or a list like 1,2")
    g.add_argument("--mode", choices=("sync", "async"), default="sync")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default on CPU: the cores shared out between the trainer and, in "
                        "async mode, the rollout threads, less one per local Ray actor; OMP_NUM_THREADS is kept)")
    g.add_argument("--no-resume", action="store_true", help="start over even if --out has checkpoints")
    g.add_argument("--checkpoint-every", type=int, default=0)
    g.add_argument("--eval-every", type=int, default=10)
    g.add_argument("--eval-temperature", type=float, default=0.0, help="held-out sampling temperature (0: greedy)")
    g.add_argument("--eval-samples", type=int, default=1,
                   help="samples per held-out task, their mean reward reported (Avg@k; needs --eval-temperature > 0)")
    g = p.add_argument_group("rollout")
    g.add_argument("--prompts-per-step", type=int, default=16)
    g.add_argument("--group-size", type=int, default=8, help="samples per prompt (K)")
    g.add_argument("--max-tokens", type=int, default=256, help="generated tokens per model turn")
    g.add_argument("--max-seq-len", type=int, default=1024, help="engine context (prompt + trajectory)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-turns", type=int, default=8, help="agent episodes: model turns before the cut")
    g.add_argument("--no-dynamic-sampling", action="store_true", help="also train on groups with equal rewards")
    g.add_argument("--overlong", choices=("mask", "penalty", "keep"), default="mask")
    g.add_argument("--curriculum", action="store_true", help="two-stage difficulty curriculum (paper §3.2)")
    g.add_argument("--dynamic-temperature", action="store_true", help="raise the temperature on reward plateaus")
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (large models: ~1e-6)")
    g.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw")
    g.add_argument("--loss-agg", choices=("token_mean", "seq_mean"), default="token_mean")
    g.add_argument("--eps-low", type=float, default=0.2)
    g.add_argument("--eps-high", type=float, default=0.28)
    g.add_argument("--kl-coef", type=float, default=0.0,
                   help="k3 KL penalty against the starting policy (the paper's GRPO: 0, no reference model)")
    g.add_argument("--micro-batch-size", type=int, default=32)
    g.add_argument("--mini-batches", type=int, default=1, help="optimizer steps per rollout batch")
    g = p.add_argument_group("engines")
    g.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="rollout engines as threads in this process, or as Ray actors")
    g.add_argument("--rollout-workers", type=int, default=1, help="rollout engines (0 with --agent-port: agents only)")
    g.add_argument("--fp8-rollout", action="store_true", help="push weights as block-wise FP8; engines run FP8")
    g.add_argument("--max-staleness", type=int, default=2, help="async: drop groups older than this many versions")
    g.add_argument("--sync-every", type=int, default=1, help="async: push weights every N steps")
    g.add_argument("--rollout-url", default=None, help="roll out through this server instead of local engines")
    g.add_argument("--rollout-api", choices=("openai", "generate"), default="openai")
    g.add_argument("--served-model", default=None, help="model name on --rollout-url (default: its first)")
    g.add_argument("--api-key", default=None)
    g.add_argument("--weight-sync-url", default=None,
                   help="push weights to this server's /update_weights_from_disk after each sync")
    g.add_argument("--agent-port", type=int, default=None,
                   help="serve the agent endpoint (POST /v1/trajectories) on this port (async mode)")
    g = p.add_argument_group("iterative self-distillation")
    g.add_argument("--distill-rounds", type=int, default=0, help="RL -> distill -> SFT rounds before the last RL")
    g.add_argument("--sft-base", default=None, help="checkpoint the distillation SFT starts from (default: --model)")
    g.add_argument("--distill-samples", type=int, default=4, help="samples per prompt when distilling")
    g.add_argument("--distill-prompts", type=int, default=1000)
    g.add_argument("--distill-sft-steps", type=int, default=200)


def _difficulty(text: str) -> Any:
    try:
        levels = [int(x) for x in text.split(",")]
    except ValueError:
        raise RLError(f"--difficulty must be integers like 1 or 1,2; got {text!r}") from None
    return levels[0] if len(levels) == 1 else levels


def _tasks(args: argparse.Namespace) -> tuple[list, list]:
    from glm45.rl.task_sets import build_tasks

    options: dict[str, Any] = {}
    if args.task == "arithmetic":
        options["difficulty"] = _difficulty(args.difficulty)
    if args.task in ("tool_agent", "search"):
        options["max_turns"] = args.max_turns
    train = build_tasks(args.task, args.n_train, args.seed, split="train", **options)
    evals: list = []
    if args.n_eval > 0:
        name = args.eval_task or args.task
        if name.startswith("jsonl:") or name == args.task:
            evals = build_tasks(name, args.n_eval, args.seed + 1, split="test", unique=not name.startswith("jsonl:"),
                                **(options if name == args.task else {}))
        else:
            evals = build_tasks(name, args.n_eval, args.seed + 1, split="test", unique=True)
        evals = evals[:args.n_eval]
    return train, evals


def _config(args: argparse.Namespace, out: Path) -> Any:
    from glm45.rl.grpo import GRPOConfig
    from glm45.rl.loop import RLConfig
    from glm45.rl.overlong import OverlongConfig
    from glm45.rl.rollout import RolloutConfig
    from glm45.rl.temperature import TemperatureConfig
    from glm45.rl.trainer import TrainerConfig

    curriculum = None
    if args.curriculum:
        from glm45.rl.curriculum import CurriculumConfig

        curriculum = CurriculumConfig(k_small=args.group_size, k_large=8 * args.group_size, seed=args.seed)
    return RLConfig(
        out=str(out), mode=args.mode, steps=args.steps, prompts_per_step=args.prompts_per_step,
        rollout=RolloutConfig(group_size=args.group_size, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed, max_turns=args.max_turns, max_context=args.max_seq_len),
        trainer=TrainerConfig(lr=args.lr, optimizer=args.optimizer, micro_batch_size=args.micro_batch_size,
                              mini_batches=args.mini_batches,
                              grpo=GRPOConfig(eps_low=args.eps_low, eps_high=args.eps_high, loss_agg=args.loss_agg,
                                              kl_coef=args.kl_coef)),
        dynamic_sampling=not args.no_dynamic_sampling, overlong=OverlongConfig(mode=args.overlong),
        fp8_rollout=args.fp8_rollout, rollout_workers=args.rollout_workers, max_staleness=args.max_staleness,
        sync_every=args.sync_every, eval_every=args.eval_every, eval_temperature=args.eval_temperature,
        eval_samples=args.eval_samples, checkpoint_every=args.checkpoint_every,
        resume=not args.no_resume, curriculum=curriculum,
        dynamic_temperature=TemperatureConfig(initial=args.temperature) if args.dynamic_temperature else None,
        max_seq_len=args.max_seq_len, seed=args.seed)


def run_rl(args: argparse.Namespace, model_dir: str, out: Path, train: list, evals: list) -> dict[str, Any]:
    """One RL run from `model_dir` into `out` with the command's settings."""
    import torch

    from glm45.model import GLM45ForCausalLM
    from glm45.rl.loop import RLRun
    from glm45.tokenizer import GLMTokenizer

    cfg = _config(args, out)
    tokenizer = GLMTokenizer.from_pretrained(model_dir)
    model = GLM45ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    clients, targets = _clients(args, cfg, model_dir, tokenizer, out)
    run = RLRun(cfg, model, tokenizer, train, evals, clients=clients, sync_targets=targets)
    server = None
    if args.agent_port is not None:
        from glm45.rl.agent_endpoint import TrajectoryCollector, create_app
        from glm45.serve.server import ServerThread

        collector = TrajectoryCollector(tokenizer, cfg.rollout.group_size, run.ingest_external,
                                        version=lambda: run.trainer.version)
        server = ServerThread(create_app(collector, buffer=run.buffer, api_key=args.api_key), host="127.0.0.1",
                              port=args.agent_port).start()
        print(f"agent endpoint: {server.base_url}/v1/trajectories", file=sys.stderr)
    try:
        return run.run()
    finally:
        if server is not None:
            server.stop()


def _clients(args, cfg, model_dir: str, tokenizer, out: Path) -> tuple[list | None, list | None]:
    """(rollout clients or None for local threads, weight-sync targets or None for the clients)."""
    from glm45.rl.clients import HTTPRolloutClient

    sync = None
    if args.weight_sync_url:
        from glm45.rl.weights import DiskWeightSync

        sync = DiskWeightSync(args.weight_sync_url, out / "pushed", fp8=args.fp8_rollout, tokenizer=tokenizer,
                              api_key=args.api_key)
    if args.rollout_url:
        from glm45.rl.rollout import HTTPEngine

        engine = HTTPEngine(args.rollout_url, tokenizer, api=args.rollout_api, model=args.served_model,
                            api_key=args.api_key)
        client = HTTPRolloutClient(engine, cfg.rollout, weight_sync=sync)
        if sync is None:
            print("note: no --weight-sync-url: the server keeps its weights, so rollouts grow stale", file=sys.stderr)
        return ([client] if args.rollout_workers > 0 else []), [client]
    targets = None
    if sync is not None:  # agents generate through a server that reloads pushed weights
        from glm45.rl.clients import WeightSyncTarget

        targets = [WeightSyncTarget(sync)]
    if args.backend == "ray" and args.rollout_workers > 0:
        from glm45.rl.ray_backend import ray_clients

        clients = ray_clients(args.rollout_workers, model_dir, cfg.rollout, fp8=cfg.fp8_rollout,
                              max_batch_size=cfg.engine_max_batch, max_seq_len=cfg.max_seq_len, seed=cfg.seed)
        return clients, (targets or []) + clients
    if targets is not None:  # local engines and the agents' server both get the weights
        return None, targets
    return None, None


def _default_threads(args: argparse.Namespace) -> int | None:
    """The trainer's torch threads when --threads is not given: async local rollout threads run
    torch ops beside it, and local Ray actors take a core each."""
    from glm45.runtime import default_device, shared_cpu_threads

    local_engines = args.backend == "local" and not args.rollout_url and args.mode == "async"
    ray_actors = args.rollout_workers if args.backend == "ray" and not args.rollout_url else 0
    return shared_cpu_threads(default_device().type, torch_workers=1 + (args.rollout_workers if local_engines else 0),
                              other_busy=ray_actors)


def run(args: argparse.Namespace) -> int:
    import torch

    threads = args.threads or _default_threads(args)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if args.agent_port is not None and args.mode != "async":
            raise RLError("--agent-port needs --mode async (agents post trajectories while the trainer trains)")
        if args.rollout_workers == 0 and args.agent_port is None:
            raise RLError("--rollout-workers 0 leaves nothing to generate; add --agent-port for agent frameworks")
        train, evals = _tasks(args)
        out = Path(args.out)
        if args.distill_rounds > 0:
            from glm45.rl.distill import DistillConfig, iterate

            cfg = DistillConfig(samples_per_prompt=args.distill_samples, max_tokens=args.max_tokens,
                                sft_steps=args.distill_sft_steps, seed=args.seed)
            summary = iterate(args.distill_rounds, args.model, out, train[:args.distill_prompts], cfg,
                              rl=lambda model_dir, round_out: run_rl(args, model_dir, round_out, train, evals),
                              sft_base=args.sft_base or args.model)
        else:
            summary = run_rl(args, args.model, out, train, evals)
    except (RLError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary.get(k) for k in ("status", "steps", "reward_first", "reward_last", "eval_first",
                                                  "eval_last", "samples_per_s", "model_dir") if k in summary}, indent=2))
    return 0
