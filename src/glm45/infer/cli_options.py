"""Command-line options shared by `glm45 generate` and `glm45 chat`: loading and sampling."""

from __future__ import annotations

import argparse

import torch

from glm45.cli import positive_int
from glm45.infer.params import SamplingParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (config.json, safetensors, tokenizer)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="compute dtype (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    p.add_argument("--fp8", action="store_true", help="run linear weights as block-wise e4m3 (FP8 checkpoints "
                   "run in FP8 anyway)")
    p.add_argument("--speculative", action="store_true", help="MTP speculative decoding")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (about 2x faster "
                   "decoding on CPU after a compile of seconds to a minute on the first steps)")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-seq-len", type=int, default=None, help="prompt + generated tokens per request")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")


def add_sampling_arguments(p: argparse.ArgumentParser, max_tokens: int = 256, temperature: float = 1.0) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=max_tokens)
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true")
    g.add_argument("--seed", type=int, default=None)


def sampling_from_args(args: argparse.Namespace, **overrides) -> SamplingParams:
    fields = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                  min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                  presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                  stop=list(args.stop), ignore_eos=args.ignore_eos, seed=args.seed)
    fields.update(overrides)
    return SamplingParams(**fields)


def load_engine(args: argparse.Namespace):
    from glm45.infer.engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    return Engine.from_pretrained(args.model, dtype=DTYPES[args.dtype] if args.dtype else None,
                                  fp8=True if args.fp8 else None, device=args.device,
                                  max_batch_size=args.max_batch_size, max_seq_len=args.max_seq_len,
                                  speculative=args.speculative, compile=args.compile)
