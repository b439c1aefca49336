"""`glm45 pretrain --data SHARDS --out DIR [--preset nano] [--tokens 2M] ...`

Pre-training (paper §2.2, §2.4): the concat-packed stages of the data (4K in the paper), Muon +
AdamW, cosine LR with warm-up, batch-size warm-up, loss-free balance routing with the sequence
balance loss, MTP loss. Under `torchrun --nproc-per-node N` it trains data-parallel (DDP, or
FSDP2 with --parallel fsdp). Writes checkpoints, metrics.jsonl, summary.json, plots and the
final model as a Hugging Face directory OUT/hf; `--resume` continues an interrupted run.
"""

from __future__ import annotations

import argparse

from glm45.train.run import add_run_arguments, run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "pretrain")


def run(args: argparse.Namespace) -> int:
    return run_command(args, "pretrain")
