"""`glm45 speedrun [--out DIR] [--preset nano] [--quick] [--dtype auto]`."""

from __future__ import annotations

import argparse

from glm45.cli import positive_int
from glm45.config import PRESETS
from glm45.pipeline.speedrun import SpeedrunConfig, run_speedrun
from glm45.runtime import COMPUTE_DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/speedrun", help="run directory (stages resume from it)")
    p.add_argument("--preset", default="nano", choices=sorted(PRESETS), help="model size (nano on a CPU)")
    p.add_argument("--quick", action="store_true", help="the same stages on a cut-down budget (~3 minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: on a CPU shared with other jobs more threads stall)")
    p.add_argument("--dtype", default="auto", choices=["auto", *COMPUTE_DTYPES],
                   help="training compute dtype (auto: bf16 autocast where it is fast here, else fp32)")


def run(args: argparse.Namespace) -> int:
    cfg = SpeedrunConfig(out=args.out, preset=args.preset, quick=args.quick, seed=args.seed, threads=args.threads,
                         dtype=args.dtype)
    report = run_speedrun(cfg)
    print(f"\nreport: {report}")
    final = report.parent / "final"
    if final.exists():  # a link to the last model trained
        print(f"chat with it:  glm45 chat --model {final}\nserve it:      glm45 serve --model {final}")
    return 0
