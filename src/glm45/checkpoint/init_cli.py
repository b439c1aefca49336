"""`glm45 init --preset tiny --out DIR`: a randomly initialised checkpoint with a small tokenizer.

For tests and for trying `glm45 serve` / `glm45 chat` without training. The tokenizer is a
byte-level BPE trained in a second on text every machine has (the Python standard library's
docstrings), sized to the preset's vocabulary.
"""

from __future__ import annotations

import argparse
import ast
import os
import sysconfig
from dataclasses import replace
from pathlib import Path

from glm45.config import ConfigError, ModelConfig, PRESETS

MAX_INIT_VOCAB = 32768  # a larger preset keeps its model vocab; the tokenizer just uses fewer ids


def stdlib_docstrings(max_chars: int = 600_000) -> list[str]:
    """Docstrings of standard-library modules, in sorted path order (deterministic)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and (doc := ast.get_docstring(node)):
                out.append(doc)
                total += len(doc)
        if total >= max_chars:
            break
    return out


def init_checkpoint(preset: str, out: str | os.PathLike, seed: int = 0, **overrides) -> None:
    from glm45.model import GLM45ForCausalLM
    from glm45.tokenizer import train_tokenizer
    from glm45.tokenizer.special import SPECIAL_TOKENS, STOP_TOKENS

    cfg = ModelConfig.preset(preset, **overrides)
    if cfg.vocab_size > MAX_INIT_VOCAB:
        raise ConfigError(f"preset {preset!r} has a released-size vocabulary ({cfg.vocab_size}); `glm45 init` "
                          "makes small test checkpoints — use a preset with vocab <= 32768")
    tokenizer = train_tokenizer(stdlib_docstrings(), cfg.vocab_size)
    cfg = replace(cfg, eos_token_id=[SPECIAL_TOKENS.index(t) for t in STOP_TOKENS],
                  pad_token_id=SPECIAL_TOKENS.index("<|endoftext|>"))
    model = GLM45ForCausalLM(cfg)
    model.init_weights(seed)
    model.save_pretrained(out, tokenizer=tokenizer)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default: tiny)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    try:
        init_checkpoint(args.preset, args.out, args.seed)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote a random {args.preset} checkpoint with tokenizer to {args.out}")
    return 0
