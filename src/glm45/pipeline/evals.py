"""The speedrun's evaluation after each model stage.

- `text_metrics`: held-out loss and bits-per-byte (`glm45.eval.likelihood.perplexity_metrics` over
  per-text log-likelihoods from plain forwards), the held-out loss of the training data's unigram
  model for comparison, and the MTP draft acceptance rate of greedy speculative decoding
  (`glm45.infer.Engine(speculative=True)`) continuing held-out text prefixes;
- `chat_metrics`: the chat checks of `glm45.sft.evaluate` (arithmetic accuracy with thinking on and
  off, reasoning present when on / absent when off, schema-valid tool calls, exact first calls,
  completed tool-use episodes), greedy, on the test split of `glm45.tasks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from glm45.pipeline.budget import Budget
from glm45.pipeline.heldout import heldout_texts, unigram_cross_entropy

WINDOW = 512  # tokens scored per forward window


def load(model_dir: str | Path):
    """A checkpoint in fp32 (measured faster than bf16 for the nano model here) on the default
    device (a GPU when there is one), and its tokenizer."""
    from glm45.model import GLM45ForCausalLM
    from glm45.runtime import default_device
    from glm45.tokenizer import GLMTokenizer

    model = GLM45ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device=default_device())
    return model.eval(), GLMTokenizer.from_pretrained(model_dir)


def text_loglik(model, token_lists: list[list[int]], pad_id: int, batch: int = 8) -> list[float]:
    """Log-likelihood (nats) of each token list given the token before it (the first id is the
    context only), scored in windows of WINDOW tokens that overlap by one."""
    windows: list[tuple[int, list[int]]] = []
    for i, ids in enumerate(token_lists):
        for s in range(0, len(ids) - 1, WINDOW):
            windows.append((i, ids[s:s + WINDOW + 1]))
    windows.sort(key=lambda w: len(w[1]))
    device = next(model.parameters()).device
    total = [0.0] * len(token_lists)
    with torch.inference_mode():
        for b in tqdm(range(0, len(windows), batch), desc="held-out loss", unit="batch", leave=False):
            chunk = windows[b:b + batch]
            T = max(len(w) for _, w in chunk)
            ids = torch.tensor([w + [pad_id] * (T - len(w)) for _, w in chunk], device=device)
            mask = torch.tensor([[1] * len(w) + [0] * (T - len(w)) for _, w in chunk], device=device)
            logits = model(ids[:, :-1], attention_mask=mask[:, :-1]).logits.float()
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none").sum(1)
            for (i, _), v in zip(chunk, nll.tolist()):
                total[i] -= v
    return total


def mtp_acceptance(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    """Greedy speculative decoding with the MTP layer as drafter: the share of drafts accepted
    and the tokens produced per forward."""
    from glm45.infer import Engine, SamplingParams

    engine = Engine(model, tokenizer, speculative=True, max_batch_size=len(prompts),
                    max_seq_len=max(len(p) for p in prompts) + new_tokens + 2)
    engine.generate(prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True))
    stats = engine.stats()
    return {"mtp_acceptance": stats["acceptance_rate"], "mtp_tokens_per_forward": stats["tokens_per_forward"]}


def text_metrics(model_dir: str | Path, run: Path, budget: Budget) -> dict[str, Any]:
    from glm45.eval.likelihood import perplexity_metrics

    model, tokenizer = load(model_dir)
    texts = heldout_texts(run / "corpus", tokenizer, budget.eval_heldout_tokens)
    eos = tokenizer.eos_token_id
    token_lists = [[eos] + tokenizer.encode(t) for t in texts]
    logliks = text_loglik(model, token_lists, tokenizer.pad_token_id)
    m = perplexity_metrics([(ll, len(ids) - 1, len(t.encode("utf-8")))
                            for ll, ids, t in zip(logliks, token_lists, texts)])
    out: dict[str, Any] = {"heldout_loss": m["loss"], "heldout_bpb": m["bits_per_byte"]}
    counts_path = run / "shards" / "unigram_counts.npy"
    if counts_path.is_file():
        counts = np.load(counts_path)
        out["unigram_heldout_loss"] = unigram_cross_entropy(counts, (t for ids in token_lists for t in ids[1:]))
    prompt_len = 32
    prompts = [ids[:prompt_len] for ids in token_lists if len(ids) > prompt_len][: budget.eval_mtp_prompts]
    if prompts and getattr(model, "mtp", None) is not None:
        out.update(mtp_acceptance(model, tokenizer, prompts, budget.eval_mtp_tokens))
    return out


def chat_metrics(model_dir: str | Path, budget: Budget, seed: int = 0) -> dict[str, Any]:
    from glm45.infer import Engine
    from glm45.sft.evaluate import EvalConfig, evaluate_model

    model, tokenizer = load(model_dir)
    engine = Engine(model, tokenizer, max_batch_size=32, max_seq_len=1536)
    config = EvalConfig(n_arithmetic=budget.eval_tasks, n_tools=budget.eval_tasks, n_episodes=budget.eval_episodes,
                        seed=seed, n_distractors=1, max_tokens=budget.eval_max_tokens)
    return evaluate_model(engine, config)


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compute()`'s result, saved at `path`; read back instead of recomputed when a resumed
    stage has it already."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    return result
