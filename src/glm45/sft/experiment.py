"""The SFT experiment: fine-tune a small model on the built-in synthetic reasoning and tool-use
data, then compare it with its base on held-out tasks.

    python -m glm45.sft.experiment --out runs/sft-experiment            # nano, about half an hour on 2 CPU cores
    python -m glm45.sft.experiment --out /tmp/x --preset tiny --quick   # a minute or two

Without --base, the base is a fresh `glm45 init` checkpoint of --preset (random weights and a
small tokenizer), so "beats the base" means "learnt the task from the SFT data alone". Data
(train split of glm45.tasks): arithmetic with worked steps, tool tasks of every kind with their
tools, short general answers; --non-thinking-ratio of the samples are rendered with thinking off.
Measured on the test split (glm45.sft.evaluate): boxed-answer accuracy with thinking on and off,
reasoning present when on / absent when off, strictly valid tool calls, exact first-step calls,
completed episodes. Writes results.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from glm45.data.document import write_documents
from glm45.sft.builtin import reference_samples
from glm45.sft.dataset import SFTDataConfig
from glm45.sft.evaluate import EvalConfig, evaluate_model
from glm45.sft.train import SFTTrainConfig, finetune

ROWS = ("accuracy_thinking_on", "accuracy_thinking_off", "reasoning_when_on", "no_think_when_off", "emits_call",
        "valid_call", "exact_first_step", "episode_completed")


def build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--base", help="base checkpoint (default: a fresh `glm45 init` of --preset)")
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="model config field for the fresh base, e.g. hidden_size=128 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small data and few steps (a smoke run)")
    parser.add_argument("--n-arithmetic", type=int, default=2400)
    parser.add_argument("--n-tools", type=int, default=1200)
    parser.add_argument("--n-general", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=1, help="unneeded tools offered per tool task")
    parser.add_argument("--non-thinking-ratio", type=float, default=0.3)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-n", type=int, default=60, help="held-out problems per check")
    parser.add_argument("--seed", type=int, default=0)


def overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--override needs KEY=VALUE, got {pair!r}")
        out[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
    return out


def run_experiment(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.n_arithmetic, args.n_tools, args.n_general, args.epochs, args.eval_n = 300, 80, 20, 2.0, 20
    base = args.base
    if base is None:
        from glm45.checkpoint.init_cli import init_checkpoint

        base = out / "base"
        if not (base / "config.json").is_file():
            init_checkpoint(args.preset, base, args.seed, torch_dtype="float32", **overrides(args.override))
    kinds = ("single", "multi", "parallel", "irrelevant", "multiturn")
    samples = (reference_samples("reasoning", args.n_arithmetic, args.seed, difficulty=(1, 2))
               + reference_samples("agent", args.n_tools, args.seed, agent_kinds=kinds, n_distractors=args.distractors)
               + reference_samples("general", args.n_general, args.seed))
    write_documents(samples, out / "train.jsonl")
    train = SFTTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    data = SFTDataConfig(seq_len=args.seq_len, non_thinking_ratio=args.non_thinking_ratio, seed=args.seed)
    summary = finetune(base, samples, out / "sft", train, data)
    evaluation = EvalConfig(n_arithmetic=args.eval_n, n_tools=args.eval_n, n_episodes=args.eval_n // 2,
                            seed=args.seed, n_distractors=args.distractors)
    from glm45.infer import Engine

    results = {}
    for name, directory in (("base", base), ("sft", summary["model_dir"])):
        t0 = time.perf_counter()
        engine = Engine.from_pretrained(directory, max_batch_size=32, max_seq_len=args.seq_len)
        results[name] = evaluate_model(engine, evaluation)
        results[name]["eval_seconds"] = round(time.perf_counter() - t0, 1)
    report = {"config": vars(args) | {"base": str(base)}, "eval_config": asdict(evaluation),
              "training": {k: summary[k] for k in ("steps", "rows", "first_loss", "final_loss", "seconds",
                                                   "data", "packing")},
              "results": results}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def format_table(report: dict) -> str:
    lines = [f"{'held-out metric':24s} {'base':>8s} {'sft':>8s}"]
    for row in ROWS:
        base, sft = (report["results"][m].get(row) for m in ("base", "sft"))
        if base is not None:
            lines.append(f"{row:24s} {base:8.3f} {sft:8.3f}")
    t = report["training"]
    lines.append(f"training: {t['steps']} steps, loss {t['first_loss']:.3f} -> {t['final_loss']:.3f}, "
                 f"{t['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glm45.sft.experiment", description=__doc__.split("\n\n")[0])
    build_arguments(parser)
    report = run_experiment(parser.parse_args(argv))
    print(format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
