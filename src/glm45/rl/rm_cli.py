"""`glm45 rm train|score|synth`: reward-model training and scoring.

  glm45 rm train --base DIR --data pairs.jsonl --out DIR [--eval-data pairs.jsonl]
  glm45 rm score --model DIR --data FILE [--out scores.jsonl]
  glm45 rm synth --kind case --n 1000 --out pairs.jsonl

`score` takes preference pairs (prints the share ranked correctly) or `{"prompt"|"messages",
"response"}` records (writes each score); see `glm45.rl.reward_model` for the formats.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="rm_command", metavar="{train,score,synth}")
    t = sub.add_parser("train", help="train a Bradley-Terry reward model on preference pairs")
    t.add_argument("--base", required=True, help="checkpoint directory (with tokenizer) to start from")
    t.add_argument("--data", required=True, help="preference pairs, JSONL")
    t.add_argument("--out", required=True, help="directory for the reward model, metrics.jsonl and summary.json")
    t.add_argument("--eval-data", help="held-out pairs (default: --eval-fraction of --data)")
    t.add_argument("--eval-fraction", type=float, default=0.1)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    t.add_argument("--lr", type=float, default=2e-3, help="Muon learning rate (matrices)")
    t.add_argument("--adamw-lr", type=float, help="AdamW learning rate (embeddings, norms, head); default --lr")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--max-length", type=int, default=512, help="tokens per conversation (cut from the left)")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("score", help="score responses or preference pairs with a trained reward model")
    s.add_argument("--model", required=True, help="reward model directory (from `glm45 rm train`)")
    s.add_argument("--data", required=True, help="JSONL of pairs or of {prompt|messages, response}")
    s.add_argument("--out", help="write the records with their scores here (JSONL)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="cpu")
    y = sub.add_parser("synth", help="write synthetic preference pairs with a learnable signal")
    y.add_argument("--kind", choices=("case", "arithmetic"), default="case")
    y.add_argument("--n", type=int, default=1000)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--out", required=True)


def _train(args: argparse.Namespace) -> int:
    from glm45.rl.reward_model import RMTrainConfig, read_pairs, train_reward_model

    config = RMTrainConfig(lr=args.lr, adamw_lr=args.adamw_lr, weight_decay=args.weight_decay, epochs=args.epochs,
                           batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                           eval_fraction=args.eval_fraction, max_steps=args.max_steps)
    eval_pairs = read_pairs(args.eval_data) if args.eval_data else None
    summary = train_reward_model(args.base, read_pairs(args.data), args.out, config, eval_pairs=eval_pairs,
                                 device=args.device, progress=not args.quiet)
    after = summary["eval_after"]
    held = f"; held-out pair accuracy {after['accuracy']:.3f}" if after else ""
    print(f"trained {summary['steps']} steps on {summary['train_pairs']} pairs{held}; wrote {args.out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from glm45.rl.reward_model import RewardScorer, pair_from_dict, prompt_messages, read_jsonl

    records = list(read_jsonl(args.data))
    if not records:
        print(f"error: {args.data} holds no records", file=sys.stderr)
        return 2
    scorer = RewardScorer(args.model, device=args.device, batch_size=args.batch_size)
    pairs = all("chosen" in r and "rejected" in r for _, r in records)
    out_records = []
    if pairs:
        parsed = [pair_from_dict(r, where) for where, r in records]
        scores = scorer.score_many([(p.messages, p.chosen) for p in parsed]
                                   + [(p.messages, p.rejected) for p in parsed])
        n = len(parsed)
        right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(scores[:n], scores[n:]))
        for (_, rec), c, r in zip(records, scores[:n], scores[n:]):
            out_records.append({**rec, "chosen_score": c, "rejected_score": r})
        print(json.dumps({"pairs": n, "accuracy": right / n}))
    else:
        items = []
        for where, rec in records:
            if "response" not in rec:
                print(f"error: {where}: needs 'response' (or 'chosen' and 'rejected' for pairs)", file=sys.stderr)
                return 2
            items.append((prompt_messages(rec, where), rec["response"]))
        scores = scorer.score_many(items)
        out_records = [{**rec, "score": s} for (_, rec), s in zip(records, scores)]
        print(json.dumps({"records": len(scores), "mean_score": sum(scores) / len(scores)}))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for rec in out_records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from glm45.rl.reward_model import synthetic_pairs

    pairs = synthetic_pairs(args.n, args.seed, args.kind)
    with open(args.out, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    print(f"wrote {len(pairs)} {args.kind} pairs to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from glm45.checkpoint.hf import CheckpointError
    from glm45.rl.errors import RLError
    from glm45.tokenizer import TokenizerError

    commands = {"train": _train, "score": _score, "synth": _synth}
    if args.rm_command not in commands:
        print("usage: glm45 rm {train,score,synth} ... (see glm45 rm --help)", file=sys.stderr)
        return 2
    try:
        return commands[args.rm_command](args)
    except (RLError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
