"""`glm45 sft`: supervised fine-tuning and its data tools.

    glm45 sft --base DIR --data A.jsonl [B.jsonl ...] --out DIR        fine-tune (the default action)
    glm45 sft experts --base DIR --out DIR [--small] [--rl-steps N]     expert iteration, end to end
    glm45 sft agent-data (--model DIR | --base-url URL) --out F.jsonl  agentic trajectories, judged
    glm45 sft filter --data CANDIDATES.jsonl --out KEPT.jsonl          rejection-sampling filters

Fine-tuning writes OUT/data (packed shards), OUT/checkpoints (resumable with --resume),
OUT/metrics.jsonl, OUT/summary.json and the model as a Hugging Face directory with tokenizer and
chat template in OUT/model. Under `torchrun --nproc-per-node N -m glm45 sft ...` it trains with
DDP (or --parallel fsdp).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glm45.sft.records import SFTError

ACTIONS = ("train", "experts", "agent-data", "filter")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("action", nargs="?", default="train", choices=ACTIONS, help="what to do (default: train)")
    parser.add_argument("--base", metavar="DIR", help="base checkpoint (train, experts)")
    parser.add_argument("--data", nargs="+", metavar="JSONL", help="chat samples (train) or candidates (filter)")
    parser.add_argument("--out", metavar="PATH", help="output directory (train, experts) or JSONL file")
    parser.add_argument("--seed", type=int, default=0)
    t = parser.add_argument_group("training")
    t.add_argument("--seq-len", type=int, help="packed row length (default 2048; 1024 for experts --small)")
    t.add_argument("--non-thinking-ratio", type=float, default=0.0,
                   help="fraction of samples rendered with thinking off (default 0)")
    t.add_argument("--no-split-turns", action="store_true",
                   help="train multi-turn samples as one sequence (earlier turns lose their reasoning)")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    t.add_argument("--batch-size", type=int, default=8, help="packed rows per step")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Muon; AdamW shares it)")
    t.add_argument("--min-lr-ratio", type=float, default=0.1)
    t.add_argument("--warmup-steps", type=int, default=10)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--mtp-weight", type=float, default=0.3, help="weight of the MTP loss (0: off)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    t.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: at the end)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    t.add_argument("--parallel", default="auto", choices=("auto", "none", "ddp", "fsdp"),
                   help="under torchrun: ddp or fsdp (default: ddp when there are several processes)")
    e = parser.add_argument_group("experts")
    e.add_argument("--small", action="store_true", help="the loop on small data (a quick run)")
    e.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation of every model")
    e.add_argument("--rl-steps", type=int, default=0,
                   help="GRPO steps for each expert in its environment after its cold start (0: SFT experts only)")
    a = parser.add_argument_group("agent-data")
    a.add_argument("--model", metavar="DIR", help="local checkpoint generating the trajectories")
    a.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint generating the trajectories")
    a.add_argument("--api-key", metavar="KEY")
    a.add_argument("--model-name", metavar="NAME")
    a.add_argument("--tasks", type=int, default=50, help="tasks to synthesize (default 50)")
    a.add_argument("--tools", metavar="JSON", help="tool descriptions (OpenAI list or MCP {'tools': [...]}); "
                   "default: the built-in tools and tasks")
    a.add_argument("--samples-per-task", type=int, default=1)
    a.add_argument("--temperature", type=float, default=0.7)
    a.add_argument("--max-tokens", type=int, default=1024)
    a.add_argument("--no-thinking", action="store_true")
    a.add_argument("--llm-judge", action="store_true", help="also ask the model whether each task was done")


def _train(args: argparse.Namespace) -> int:
    from glm45.sft.dataset import SFTDataConfig
    from glm45.sft.records import read_samples
    from glm45.sft.train import SFTTrainConfig, finetune

    if not (args.base and args.data and args.out):
        raise SFTError("training needs --base DIR, --data FILE [FILE ...] and --out DIR")
    for path in args.data:
        if not Path(path).is_file():
            raise SFTError(f"--data {path}: no such file")
    train = SFTTrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                           grad_accum=args.grad_accum, lr=args.lr, min_lr_ratio=args.min_lr_ratio,
                           warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, mtp_weight=args.mtp_weight,
                           seed=args.seed, device=args.device, parallel=args.parallel,
                           checkpoint_every=args.checkpoint_every, resume=args.resume)
    data = SFTDataConfig(seq_len=args.seq_len or 2048, non_thinking_ratio=args.non_thinking_ratio, seed=args.seed,
                         split_turns=not args.no_split_turns)
    summary = finetune(args.base, read_samples(args.data), args.out, train, data)
    d = summary["data"]
    print(f"{d['samples']} samples ({d['non_thinking']} non-thinking, {d['dropped_invalid'] + d['dropped_overlong']} "
          f"dropped), {summary['steps']} steps, loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}")
    print(f"model: {summary['model_dir']}")
    return 0


def _experts(args: argparse.Namespace) -> int:
    from glm45.sft.experts import EXPERT_RL_TASKS, ExpertIterationConfig, ExpertRLConfig, run_expert_iteration

    if not (args.base and args.out):
        raise SFTError("expert iteration needs --base DIR and --out DIR")
    config = ExpertIterationConfig.small(args.seq_len or 1024) if args.small else ExpertIterationConfig()
    config.seed = args.seed
    if args.seq_len:
        config.data.seq_len = args.seq_len
    if args.no_eval:
        config.evaluate = None
    if args.rl_steps < 0:
        raise SFTError(f"--rl-steps must be >= 0, got {args.rl_steps}")
    if args.rl_steps:
        config.expert_rl = {d: ExpertRLConfig(steps=args.rl_steps, max_tokens=config.agent_max_tokens)
                            for d in EXPERT_RL_TASKS}
    summary = run_expert_iteration(args.base, args.out, config)
    print(f"hybrid model: {summary['hybrid']['model_dir']}")
    for name, metrics in (summary.get("evaluation") or {}).items():
        print(f"  {name:18s} " + "  ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return 0


def _agent_data(args: argparse.Namespace) -> int:
    from glm45.data.document import write_documents
    from glm45.eval import OpenAIBackend
    from glm45.sft.agentic import (
        LLMJudge,
        ProtocolJudge,
        RolloutConfig,
        StateJudge,
        Toolkit,
        builtin_tasks,
        generate_trajectories,
        judge_trajectories,
        synthesize_tasks,
    )
    from glm45.sft.agentic.toolkit import LLMSimulator
    from glm45.eval.local import LocalBackend
    from glm45.sft.records import sample_document

    if (args.model is None) == (args.base_url is None) or not args.out:
        raise SFTError("agent-data needs one of --model DIR or --base-url URL, and --out FILE.jsonl")
    backend = (LocalBackend.from_pretrained(args.model, max_batch_size=16) if args.model
               else OpenAIBackend(args.base_url, args.api_key, args.model_name))
    if args.tools:
        kit = Toolkit(LLMSimulator(backend))
        kit.add_mcp(json.loads(Path(args.tools).read_text()))  # an MCP listing or a list of tool schemas
        tasks = synthesize_tasks(kit, args.tasks, args.seed, backend=backend)
    else:
        kit = Toolkit.builtin()
        tasks = builtin_tasks(args.tasks, args.seed)
    rollout = RolloutConfig(samples_per_task=args.samples_per_task, enable_thinking=not args.no_thinking,
                            temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    trajectories = generate_trajectories(tasks, kit, backend, rollout, user_backend=backend)
    judges = [StateJudge(), ProtocolJudge()] + ([LLMJudge(backend, votes=3)] if args.llm_judge else [])
    kept, report = judge_trajectories(trajectories, judges)
    n = write_documents([sample_document(t.to_sample()) for t in kept], args.out)
    print(json.dumps(report))
    print(f"wrote {n} trajectories to {args.out}")
    return 0


def _filter(args: argparse.Namespace) -> int:
    from glm45.data.document import write_documents
    from glm45.sft.filters import format_report
    from glm45.sft.records import read_samples
    from glm45.sft.verifiers import default_pipeline

    if not (args.data and args.out):
        raise SFTError("filter needs --data CANDIDATES.jsonl and --out KEPT.jsonl")
    kept, report = default_pipeline().run(read_samples(args.data))
    write_documents(kept, args.out)
    print(format_report(report))
    print(f"kept {len(kept)}; wrote {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    actions = {"train": _train, "experts": _experts, "agent-data": _agent_data, "filter": _filter}
    try:
        return actions[args.action](args)
    except (SFTError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
