"""`glm45 midtrain --init PRETRAIN_OUT --data SHARDS --out DIR [--tokens 1M] ...`

Mid-training (paper §2.3): the best-fit-packed stages (repo-level code, synthetic reasoning,
long context and agent data; 32K → 128K in the paper) from a pre-trained model. From a
`glm45 pretrain` output directory it continues that run's optimizer state and schedules
(tokens seen carry over); RoPE's base moves to --rope-theta (1e6) as its first stage starts.
"""

from __future__ import annotations

import argparse

from glm45.train.run import add_run_arguments, run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "midtrain")


def run(args: argparse.Namespace) -> int:
    return run_command(args, "midtrain")
