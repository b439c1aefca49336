"""The `glm45` command.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `glm45 --help`
stays fast and a heavy dependency of one command never slows another.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help). A command whose module is not present is not offered.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("glm45.params_cli", "print total / active parameter counts of a preset or config"),
    "init": ("glm45.checkpoint.init_cli", "write a randomly initialised checkpoint directory with a small tokenizer"),
    "tokenizer": ("glm45.tokenizer.cli", "train a byte-level BPE tokenizer with the GLM-4.5 special tokens"),
    "data": ("glm45.data.cli", "data pipeline: sources, filters, dedup, quality, FIM, packing, shards"),
    "pretrain": ("glm45.train.cli_pretrain", "pre-train a model on token shards"),
    "midtrain": ("glm45.train.cli_midtrain", "mid-train a base checkpoint (longer sequences, best-fit packing)"),
    "sft": ("glm45.sft.cli", "supervised fine-tuning on chat JSONL"),
    "rl": ("glm45.rl.cli", "reinforcement learning (GRPO) with verifiable rewards"),
    "rm": ("glm45.rl.rm_cli", "reward model training and scoring"),
    "generate": ("glm45.infer.cli_generate", "generate completions for JSONL prompts"),
    "chat": ("glm45.infer.cli_chat", "interactive chat in the terminal"),
    "serve": ("glm45.serve.cli", "OpenAI-compatible HTTP server"),
    "eval": ("glm45.eval.cli", "evaluate a checkpoint or an OpenAI-compatible endpoint"),
    "speedrun": ("glm45.pipeline.cli", "train a tiny GLM-4.5 end to end on this machine and report it"),
}


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (threads, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_text) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = (module, help_text)
    return out


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="glm45", description="The GLM-4.5 system on one codebase.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    available = _available()
    chosen = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    for name, (module, help_text) in available.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module of the command being run
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            modules[name] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser, modules = build_parser()
    args = parser.parse_args()
    if args.command is None:
        parser.print_help()
        return 0
    mod = modules.get(args.command) or importlib.import_module(_available()[args.command][0])
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
