"""A Bradley–Terry reward model on a glm45 checkpoint (§3.4, Holistic RL: human feedback).

`RewardModel` is the causal LM's decoder with a scalar head on the hidden state of the last
token (the stop token `encode_chat` appends after the response, so the head reads a summary of
prompt and response). Trained on preference pairs with the Bradley–Terry loss
-log sigmoid(r(chosen) - r(rejected)).

Data (JSONL, one pair per line): `{"prompt": str | "messages": [...], "chosen": str | message,
"rejected": str | message}`; a response may be a string (the answer) or an assistant message.

A trained model directory is a normal checkpoint directory (config, safetensors, tokenizer) plus
`reward_head.safetensors` and `reward_config.json`; `RewardModel.from_pretrained` loads it, and
`RewardScorer` scores conversations and serves as a reward for `glm45.rl.rewards`
(sigmoid of the score, so it lies in [0, 1]).

Shapes: B sequences, T tokens, D hidden width.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from glm45.chat import encode_chat
from glm45.model import GLM45ForCausalLM
from glm45.rl.errors import RLError

__all__ = ["PreferencePair", "RMTrainConfig", "RewardModel", "RewardScorer", "encode_conversation", "pair_accuracy",
           "pair_from_dict", "prompt_messages", "read_pairs", "synthetic_pairs", "train_reward_model"]

HEAD_FILE = "reward_head.safetensors"
RM_CONFIG_FILE = "reward_config.json"


# ---- data -----------------------------------------------------------------------------------


@dataclass
class PreferencePair:
    messages: list[dict]  # the prompt conversation
    chosen: dict  # assistant message
    rejected: dict


def _response(value: Any, where: str) -> dict:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, Mapping) and value.get("role", "assistant") == "assistant":
        return {"role": "assistant", **{k: v for k, v in value.items() if k != "role"}}
    raise RLError(f"{where}: a response must be a string or an assistant message, got {str(value)[:100]}")


def prompt_messages(record: Mapping[str, Any], where: str) -> list[dict]:
    if isinstance(record.get("messages"), list):
        return [dict(m) for m in record["messages"]]
    if isinstance(record.get("prompt"), str):
        return [{"role": "user", "content": record["prompt"]}]
    raise RLError(f"{where}: needs 'prompt' (a string) or 'messages' (a list of chat messages)")


def pair_from_dict(record: Any, where: str = "pair") -> PreferencePair:
    if not isinstance(record, Mapping):
        raise RLError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("chosen", "rejected"):
        if key not in record:
            raise RLError(f"{where}: missing {key!r} (a pair needs prompt/messages, chosen and rejected)")
    return PreferencePair(prompt_messages(record, where), _response(record["chosen"], where),
                          _response(record["rejected"], where))


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    p = Path(path)
    if not p.is_file():
        raise RLError(f"data file {p} does not exist")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield f"{p}:{n}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise RLError(f"{p}:{n}: not valid JSON: {e}") from None


def read_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    pairs = [pair_from_dict(rec, where) for where, rec in read_jsonl(path)]
    if not pairs:
        raise RLError(f"{path} holds no preference pairs")
    return pairs


def encode_conversation(tokenizer: Any, messages: Sequence[Mapping], response: Mapping, max_length: int) -> list[int]:
    """Token ids of prompt + response (rendered by the chat template, stop token appended), cut
    from the left to `max_length` so the response's end — where the head reads — always stays."""
    ids, _ = encode_chat(tokenizer, [*messages, response])
    return ids[-max_length:]


_CASE_SENTENCES = ("the river runs to the sea", "my cat sleeps on the warm chair", "we will meet at the station",
                   "this code reads the file twice", "a small boat crossed the lake", "the garden needs more water",
                   "please send the report by friday", "the train was late again today", "she plays the piano well",
                   "open the window before you leave", "the market sells fresh bread", "our team won the last game")


def synthetic_pairs(n: int, seed: int = 0, kind: str = "case") -> list[dict]:
    """Preference pairs with a learnable signal (for tests and demos).

    - "case": the prompt asks for an answer in upper or lower case; chosen follows it, rejected
      does the opposite (the model must relate the instruction to the response).
    - "arithmetic": "What is a + b?" with single digits; chosen has the right sum, rejected a
      wrong one.
    """
    rng = random.Random(f"glm45.rl.reward_model.synthetic/{kind}/{seed}")
    out = []
    for _ in range(n):
        if kind == "case":
            sentence = rng.choice(_CASE_SENTENCES)
            upper = rng.random() < 0.5
            prompt = f"Repeat this sentence in {'UPPERCASE' if upper else 'lowercase'} letters: {sentence}"
            good, bad = (sentence.upper(), sentence) if upper else (sentence, sentence.upper())
        elif kind == "arithmetic":
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            wrong = rng.choice([s for s in range(0, 19) if s != a + b])
            prompt, good, bad = f"What is {a} + {b}?", f"{a} + {b} = {a + b}", f"{a} + {b} = {wrong}"
        else:
            raise RLError(f"unknown synthetic pair kind {kind!r}; choose 'case' or 'arithmetic'")
        out.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return out


# ---- the model ------------------------------------------------------------------------------


class RewardModel(nn.Module):
    def __init__(self, lm: GLM45ForCausalLM) -> None:
        super().__init__()
        self.lm = lm
        # The LM head and the MTP layer play no part in scoring: keep them out of training.
        for module in (lm.lm_head, getattr(lm, "mtp", None)):
            if module is not None:
                module.requires_grad_(False)
        hidden = lm.config.hidden_size
        self.score = nn.Linear(hidden, 1)
        nn.init.normal_(self.score.weight, std=1.0 / math.sqrt(hidden))
        nn.init.zeros_(self.score.bias)
        self.score.to(next(lm.parameters()).dtype)

    def forward(self, input_ids_BT: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        """Rewards [B] of right-padded sequences (causal attention: padding never reaches the
        real tokens, so no mask is needed)."""
        out = self.lm(input_ids_BT, compute_logits=False)
        last_BD = out.hidden_states[torch.arange(input_ids_BT.shape[0], device=input_ids_BT.device), lengths_B - 1]
        return self.score(last_BD).squeeze(-1).float()

    def save_pretrained(self, directory: str | os.PathLike, tokenizer: Any = None, **meta: Any) -> None:
        self.lm.save_pretrained(directory, tokenizer=tokenizer)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.score.state_dict().items()},
                  os.path.join(directory, HEAD_FILE))
        with open(os.path.join(directory, RM_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump({"architecture": "GLM45RewardModel", "head": "last_token_linear", **meta}, f, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> RewardModel:
        head = os.path.join(directory, HEAD_FILE)
        if not os.path.isfile(head):
            raise RLError(f"{directory} is not a reward model directory (no {HEAD_FILE}); train one with "
                          "`glm45 rm train`")
        model = cls(GLM45ForCausalLM.from_pretrained(directory, dtype=dtype, device=device))
        model.score.load_state_dict({k: v.to(model.score.weight.dtype) for k, v in load_file(head).items()})
        return model.to(device)


def _batch(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids.to(device), torch.tensor([len(s) for s in seqs], device=device)


# ---- training -------------------------------------------------------------------------------


@dataclass
class RMTrainConfig:
    lr: float = 2e-3
    adamw_lr: float | None = None  # embeddings, norms and the head (default: lr)
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    max_length: int = 512
    seed: int = 0
    eval_fraction: float = 0.1  # held out of the training pairs when no eval set is given
    log_every: int = 10
    max_steps: int | None = None


def _encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair],
                  max_length: int) -> list[tuple[list[int], list[int]]]:
    return [(encode_conversation(tokenizer, p.messages, p.chosen, max_length),
             encode_conversation(tokenizer, p.messages, p.rejected, max_length)) for p in pairs]


@torch.no_grad()
def pair_accuracy(model: RewardModel, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int,
                  batch_size: int = 32) -> dict[str, float]:
    """Share of pairs ranked correctly (ties count half) and the mean margin."""
    model.eval()
    device = next(model.parameters()).device
    right, margin = 0.0, 0.0
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        ids, lengths = _batch([c for c, _ in chunk] + [r for _, r in chunk], pad_id, device)
        scores = model(ids, lengths)
        diff = scores[: len(chunk)] - scores[len(chunk):]
        right += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        margin += float(diff.sum())
    n = max(1, len(encoded))
    return {"accuracy": right / n, "margin": margin / n}


def train_reward_model(base: str | os.PathLike, pairs: Sequence[PreferencePair], out: str | os.PathLike,
                       config: RMTrainConfig | None = None, *, eval_pairs: Sequence[PreferencePair] | None = None,
                       device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Fine-tune `base` (a checkpoint directory with a tokenizer) into a reward model at `out`.
    Writes `metrics.jsonl` and `summary.json` there; returns the summary."""
    from tqdm import tqdm

    from glm45.runtime import compute_dtype, dtype_name
    from glm45.tokenizer import GLMTokenizer
    from glm45.train.optim import build_optimizer

    config = config or RMTrainConfig()
    if config.batch_size < 1 or config.epochs < 1 or config.max_length < 8:
        raise RLError("batch_size and epochs must be >= 1 and max_length >= 8")
    tokenizer = GLMTokenizer.from_pretrained(base)
    torch.manual_seed(config.seed)
    model = RewardModel(GLM45ForCausalLM.from_pretrained(base, dtype=torch.float32, device=device))
    pairs = list(pairs)
    rng = random.Random(config.seed)
    if eval_pairs is None:
        rng.shuffle(pairs)
        n_eval = int(len(pairs) * config.eval_fraction)
        eval_pairs, pairs = pairs[:n_eval], pairs[n_eval:]
    if not pairs:
        raise RLError("no training pairs left (lower eval_fraction or pass more pairs)")
    train = _encode_pairs(tokenizer, pairs, config.max_length)
    held = _encode_pairs(tokenizer, eval_pairs, config.max_length)
    pad = tokenizer.pad_token_id
    # Newton–Schulz in bf16 only where bf16 is fast (it is ~100x slower on CPUs without it)
    ns_dtype = dtype_name(compute_dtype(device))
    optimizer = build_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, adamw_lr=config.adamw_lr,
                                ns_dtype=ns_dtype)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs if config.max_steps is None else min(
        config.max_steps, steps_per_epoch * config.epochs)
    os.makedirs(out, exist_ok=True)
    metrics_path = Path(out) / "metrics.jsonl"
    start, step = time.time(), 0
    before = pair_accuracy(model, held, pad) if held else None
    bar = tqdm(total=total, desc="rm train", disable=not progress)
    with metrics_path.open("w", encoding="utf-8") as log, bar:
        for epoch in range(config.epochs):
            order = list(range(len(train)))
            rng.shuffle(order)
            for i in range(0, len(order), config.batch_size):
                if step >= total:
                    break
                model.train()
                chunk = [train[j] for j in order[i:i + config.batch_size]]
                ids, lengths = _batch([c for c, _ in chunk] + [r for _, r in chunk], pad, torch.device(device))
                scores = model(ids, lengths)
                diff = scores[: len(chunk)] - scores[len(chunk):]
                loss = -F.logsigmoid(diff).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                step += 1
                bar.update(1)
                if step % config.log_every == 0 or step == total:
                    record = {"step": step, "epoch": epoch, "loss": loss.item(),
                              "accuracy": float((diff > 0).float().mean()), "elapsed_s": round(time.time() - start, 2)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{loss.item():.3f}")
    after = pair_accuracy(model, held, pad) if held else None
    summary = {"steps": step, "train_pairs": len(train), "eval_pairs": len(held),
               "eval_before": before, "eval_after": after, "elapsed_s": round(time.time() - start, 2),
               "config": asdict(config), "base": str(base)}
    model.save_pretrained(out, tokenizer=tokenizer, max_length=config.max_length, base=str(base))
    with open(Path(out) / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


# ---- scoring --------------------------------------------------------------------------------


class RewardScorer:
    """A trained reward model for scoring: `score(messages, response)`, batched `score_many`,
    `pair_accuracy`, and `as_reward()` for the RL reward registry."""

    def __init__(self, directory: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        from glm45.tokenizer import GLMTokenizer

        self.model = RewardModel.from_pretrained(directory, dtype=torch.float32, device=device).eval()
        self.tokenizer = GLMTokenizer.from_pretrained(directory)
        with open(os.path.join(directory, RM_CONFIG_FILE), encoding="utf-8") as f:
            self.max_length = int(json.load(f).get("max_length", 2048))
        self.batch_size = batch_size

    @torch.no_grad()
    def score_many(self, items: Sequence[tuple[Sequence[Mapping], Mapping | str]]) -> list[float]:
        """Scores of (prompt messages, response) items."""
        device = next(self.model.parameters()).device
        seqs = [encode_conversation(self.tokenizer, list(m), _response(r, "response"), self.max_length)
                for m, r in items]
        out: list[float] = []
        for i in range(0, len(seqs), self.batch_size):
            ids, lengths = _batch(seqs[i:i + self.batch_size], self.tokenizer.pad_token_id, device)
            out += self.model(ids, lengths).tolist()
        return out

    def score(self, messages: Sequence[Mapping], response: Mapping | str) -> float:
        return self.score_many([(messages, response)])[0]

    def pair_accuracy(self, pairs: Sequence[PreferencePair]) -> dict[str, float]:
        encoded = _encode_pairs(self.tokenizer, pairs, self.max_length)
        return pair_accuracy(self.model, encoded, self.tokenizer.pad_token_id, self.batch_size)

    def as_reward(self, temperature: float = 1.0):
        """A reward function (task, output) -> Reward: sigmoid(score / temperature) of the answer
        (the content of the output; reasoning is not scored) to the task's prompt."""
        from glm45.chat import parse
        from glm45.rl.rewards import Reward

        def reward(task: Mapping[str, Any], output: str) -> Reward:
            content = parse(output, enable_thinking=task.get("enable_thinking", True))["content"]
            s = self.score(prompt_messages(task, f"task {task.get('id', '')!r}"), content)
            return Reward(1.0 / (1.0 + math.exp(-s / temperature)), {"rm_score": s})

        return reward
