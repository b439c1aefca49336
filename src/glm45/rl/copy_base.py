"""A base model that can copy from its context, for agent RL at toy scale:
`python -m glm45.rl.copy_base --tokenizer DIR --out DIR`.

An agent has to carry names from its prompt into its calls and from tool results into its
answer. Small models only learn that (the induction "phase change") after millions of tokens
of text that rewards it; the speedrun's 0.4M tokens of natural text never get there (copy probe
0.01-0.03, docs/LOG.md, session 15). This recipe gets there in ~20 minutes on one core:

1. from scratch, `steps` AdamW steps on repetition text, "span. span." of random pseudo-words
   (1500 steps of 8 x 256 tokens: probe ~0.6; 1250 steps were not enough);
2. `long_steps` more steps with an environment's system block (its system prompt and tool
   schemas, ~570 tokens for `search`) in front of most rows: behind that block a model trained
   on short rows copies far worse (probe 0.65 -> 0.24), 100-200 steps repair it (0.8-0.85).

The copy probe: "The code name is X1 ... X5. I repeat, the code name is" followed by the span;
greedy next-token accuracy on the repeated span, with and without the system block in front.
The checkpoint (no MTP layer), the tokenizer and `summary.json` (probes, losses, timings) go to
`--out`; `python -m glm45.rl.env_experiment --base OUT` starts from it. `--init DIR --steps 0`
skips phase 1 and adapts an existing copy base to another environment's system block.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from glm45.envs.kg import pseudo_word

__all__ = ["CopyBaseConfig", "copy_probe", "environment_prefix", "main", "repetition_row", "train_copy_base"]

# the probe's words (kept as measured: its figures in docs/LOG.md use these syllables)
_SYLLABLES = "ka lo mi nu re ta vo si de pa gu zo ri fe ba no li ku ma te".split()


@dataclass
class CopyBaseConfig:
    preset: str = "nano"
    steps: int = 1500  # phase 1: repetition text from scratch
    lr: float = 3e-3
    batch_size: int = 8
    seq_len: int = 256
    long_steps: int = 200  # phase 2: the same behind the environment's system block
    long_lr: float = 1e-3
    long_batch_size: int = 4
    long_seq_len: int = 768
    prefix_rate: float = 0.8  # phase 2 rows that start with the system block
    env: str = "search"  # whose system block
    max_position_embeddings: int = 2048
    seed: int = 0


def _word(rng: random.Random) -> str:
    return pseudo_word(rng, syllables=_SYLLABLES)


def repetition_row(encode, rng: random.Random, length: int, prefix: list[int] | None = None) -> list[int]:
    """`length` token ids: `prefix`, then "span. span." documents of 3-12 random pseudo-words."""
    row = list(prefix or [])
    while len(row) < length:
        span = " ".join(_word(rng) for _ in range(rng.randint(3, 12)))
        row += encode(f"{span}. {span}.\n\n")
    return row[:length]


def environment_prefix(env: str, tokenizer) -> list[int]:
    """The token ids an episode of `env` starts with: its system prompt and tool schemas."""
    from glm45.chat import render
    from glm45.envs.base import make_env
    from glm45.rl.env_experiment import Budget, tasks

    task = tasks(env, Budget(), 1, 0, "train")[0]
    messages, tools = make_env(task["env"], **(task.get("env_config") or {})).reset(task.get("task", task))
    system = [m for m in messages if m["role"] == "system"]
    return tokenizer.encode(render(system, tools, enable_thinking=False))


@torch.no_grad()
def copy_probe(model, tokenizer, prefix: list[int] | None = None, n: int = 40, seed: int = 123) -> float:
    """Greedy next-token accuracy on the repeat of a random 5-word code name."""
    rng = random.Random(seed)
    hits = total = 0
    was_training = model.training
    model.eval()
    for _ in range(n):
        span = " ".join(_word(rng) for _ in range(5))
        context = list(prefix or []) + tokenizer.encode(f"The code name is {span}. I repeat, the code name is")
        target = tokenizer.encode(f" {span}.")
        logits = model(torch.tensor([context + target[:-1]])).logits[0, len(context) - 1:]
        hits += sum(int(p == t) for p, t in zip(logits.argmax(-1).tolist(), target))
        total += len(target)
    model.train(was_training)
    return hits / total


def _probes(model, tokenizer, prefix: list[int]) -> dict[str, float]:
    return {"short": copy_probe(model, tokenizer), "behind_prefix": copy_probe(model, tokenizer, prefix)}


def _phase(model, encode, rng: random.Random, steps: int, lr: float, batch: int, length: int,
           prefix: list[int] | None, prefix_rate: float, betas: tuple[float, float], warmup: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=betas)
    losses = []
    for step in range(1, steps + 1):
        rows = [repetition_row(encode, rng, length + 1, prefix if rng.random() < prefix_rate else None)
                for _ in range(batch)]
        ids = torch.tensor(rows)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / warmup) if warmup else lr
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss_sum / ids[:, 1:].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def train_copy_base(tokenizer_dir: str | Path, out: str | Path, config: CopyBaseConfig | None = None,
                    init: str | Path | None = None) -> dict:
    """Train the copy-capable base into `out` (from scratch, or on from the checkpoint `init`,
    whose vocabulary must be the tokenizer's); returns (and writes) its summary."""
    from glm45.config import ModelConfig
    from glm45.model import GLM45ForCausalLM
    from glm45.tokenizer.glm import GLMTokenizer

    config = config or CopyBaseConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = GLMTokenizer.from_pretrained(tokenizer_dir)
    encode = tokenizer.encode
    if config.long_seq_len > config.max_position_embeddings:
        raise ValueError(f"long_seq_len {config.long_seq_len} exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    torch.manual_seed(config.seed)
    if init is None:
        model = GLM45ForCausalLM(ModelConfig.preset(
            config.preset, vocab_size=len(tokenizer), num_nextn_predict_layers=0,
            max_position_embeddings=config.max_position_embeddings))
        model.init_weights(config.seed)
    else:
        model = GLM45ForCausalLM.from_pretrained(init, dtype=torch.float32)
        if model.config.vocab_size != len(tokenizer):
            raise ValueError(f"{init} has a vocabulary of {model.config.vocab_size}, the tokenizer {len(tokenizer)}")
    model.train()
    rng = random.Random(config.seed)
    prefix = environment_prefix(config.env, tokenizer)
    if len(prefix) >= config.long_seq_len:
        raise ValueError(f"the {config.env} system block is {len(prefix)} tokens with this tokenizer: "
                         f"long_seq_len {config.long_seq_len} leaves no room to copy behind it")
    t0 = time.perf_counter()
    short = _phase(model, encode, rng, config.steps, config.lr, config.batch_size, config.seq_len, None, 0.0,
                   (0.9, 0.999), 0)
    t1 = time.perf_counter()
    probes = {"after_phase1": _probes(model, tokenizer, prefix)}
    long = _phase(model, encode, rng, config.long_steps, config.long_lr, config.long_batch_size,
                  config.long_seq_len, prefix, config.prefix_rate, (0.9, 0.95), 20)
    t2 = time.perf_counter()
    probes["final"] = _probes(model, tokenizer, prefix)
    model.save_pretrained(out)
    tokenizer.save(out)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    summary = {"config": asdict(config), "init": str(init) if init else None, "prefix_tokens": len(prefix),
               "probes": probes,
               "loss_phase1_start": mean(short[:10]), "loss_phase1_end": mean(short[-50:]),
               "loss_phase2_end": mean(long[-50:]),
               "seconds_phase1": t1 - t0, "seconds_phase2": t2 - t1}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    from glm45.rl.env_experiment import ENVS

    p = argparse.ArgumentParser(prog="python -m glm45.rl.copy_base", description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True,
                   help="a glm45 tokenizer directory, e.g. the speedrun's <out>/tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--env", default="search", choices=ENVS)
    p.add_argument("--init", default=None, help="train on from this checkpoint instead of from scratch")
    defaults = CopyBaseConfig()
    for name in ("steps", "lr", "long_steps", "long_lr", "seed"):
        value = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = CopyBaseConfig(env=args.env, steps=args.steps, lr=args.lr, long_steps=args.long_steps,
                            long_lr=args.long_lr, seed=args.seed)
    print(json.dumps(train_copy_base(args.tokenizer, args.out, config, args.init), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
