"""Iterative self-distillation (paper §3.3.2): RL, then replace the cold-start SFT data with the
RL model's own verified outputs, re-run SFT, and continue RL from the better SFT model.

`collect` samples `samples_per_prompt` responses per training prompt from a policy and keeps the
ones that earn at least `min_reward` (rejection sampling with the task's verifier), at most
`keep_per_prompt` distinct ones per prompt, as chat samples: the prompt's messages plus the
response parsed back into an assistant message (reasoning, content, tool calls) — for agent
episodes, the whole trajectory. `distill` fine-tunes `sft_base` on them with `glm45.sft`.
`iterate` alternates the two with RL for a number of rounds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from glm45.rl.buffer import PromptItem
from glm45.rl.errors import RLError
from glm45.rl.rollout import LocalEngine, RolloutConfig, rollout, task_prompt
from glm45.rl.sample import Sample, Status

__all__ = ["DistillConfig", "collect", "distill", "iterate"]


@dataclass
class DistillConfig:
    samples_per_prompt: int = 4
    keep_per_prompt: int = 1
    min_reward: float = 1.0
    temperature: float = 1.0
    max_tokens: int = 256
    max_seq_len: int = 1024
    sft_steps: int = 200
    sft_lr: float = 2e-3
    sft_batch_size: int = 8
    sft_seq_len: int = 512
    seed: int = 0


def _messages(sample: Sample) -> tuple[list[dict], list[dict]]:
    """(conversation with the response as assistant message(s), tools)."""
    from glm45.chat import parse

    if "messages" in sample.metadata:  # an agent episode: the environment kept the trajectory
        return [dict(m) for m in sample.metadata["messages"]], list(sample.metadata.get("tools") or [])
    messages, tools, thinking = task_prompt(sample.prompt)
    parsed = parse(sample.response_text, tools or None, enable_thinking=thinking)
    reply: dict[str, Any] = {"role": "assistant", "content": parsed["content"]}
    if parsed["reasoning_content"]:
        reply["reasoning_content"] = parsed["reasoning_content"]
    if parsed["tool_calls"]:
        reply["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                "function": {"name": c["name"], "arguments": c["arguments"]}}
                               for i, c in enumerate(parsed["tool_calls"])]
    return [*messages, reply], tools


def collect(model_dir: str, tasks: Sequence[Any], cfg: DistillConfig | None = None) -> tuple[list, dict[str, Any]]:
    """(SFT documents from the policy's verified outputs, statistics)."""
    import torch

    from glm45.data.document import Document
    from glm45.infer import Engine

    cfg = cfg or DistillConfig()
    engine = Engine.from_pretrained(model_dir, dtype=torch.float32, max_seq_len=cfg.max_seq_len, max_batch_size=64,
                                    seed=cfg.seed)
    if engine.tokenizer is None:
        raise RLError(f"{model_dir} has no tokenizer.json")
    rcfg = RolloutConfig(group_size=cfg.samples_per_prompt, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                         seed=cfg.seed, max_context=cfg.max_seq_len)
    docs, tried, passed = [], 0, 0
    batch = 64
    for start in range(0, len(tasks), batch):
        items = [PromptItem(start + i, t) for i, t in enumerate(tasks[start:start + batch])]
        for group in rollout(LocalEngine(engine), engine.tokenizer, items, rcfg):
            tried += 1
            seen: set[str] = set()
            good = [s for s in group if s.reward is not None and s.reward >= cfg.min_reward
                    and s.status is Status.COMPLETED]
            passed += bool(good)
            for s in good:
                if len(seen) >= cfg.keep_per_prompt or s.response_text in seen:
                    continue
                seen.add(s.response_text)
                messages, tools = _messages(s)
                task_id = s.prompt.get("id", s.group_id) if isinstance(s.prompt, dict) else s.group_id
                docs.append(Document(text="", id=f"distill-{task_id}-{len(seen)}", source="rl_distill",
                                     meta={"reward": s.reward}, messages=messages, tools=tools or None))
    return docs, {"prompts": tried, "prompts_with_verified_output": passed, "samples": len(docs),
                  "pass_rate": passed / tried if tried else 0.0}


def distill(policy_dir: str, sft_base: str, tasks: Sequence[Any], out: str | Path,
            cfg: DistillConfig | None = None) -> dict[str, Any]:
    """Fine-tune `sft_base` on `policy_dir`'s verified outputs; the new model lands in out/model."""
    from glm45.sft.dataset import SFTDataConfig
    from glm45.sft.train import SFTTrainConfig, finetune

    cfg = cfg or DistillConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    docs, stats = collect(policy_dir, tasks, cfg)
    if not docs:
        raise RLError(f"the policy in {policy_dir} produced no verified output on {len(tasks)} prompts; "
                      "nothing to distil")
    with open(out / "distill_data.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "messages": d.messages, "tools": d.tools}) + "\n")
    summary = finetune(sft_base, docs, out,
                       SFTTrainConfig(max_steps=cfg.sft_steps, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size,
                                      seed=cfg.seed),
                       SFTDataConfig(seq_len=cfg.sft_seq_len, seed=cfg.seed))
    summary["distill"] = {**stats, "policy": policy_dir, "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def iterate(rounds: int, model_dir: str, out: str | Path, tasks: Sequence[Any], cfg: DistillConfig, *,
            rl: Callable[[str, Path], dict[str, Any]], sft_base: str) -> dict[str, Any]:
    """RL from `model_dir`; then `rounds` times: distil the policy into a fresh SFT model from
    `sft_base` and run RL again from it. `rl(model_dir, out_dir)` runs one RL stage and returns
    its summary (with `model_dir`, the final policy). Each stage is resumable on its own."""
    out = Path(out)
    history = []
    current = model_dir
    for r in range(rounds + 1):
        summary = rl(current, out / f"round{r}" / "rl")
        history.append({"round": r, "start_model": current, "rl": {k: summary.get(k) for k in
                        ("reward_first", "reward_last", "eval_first", "eval_last", "model_dir")}})
        if r == rounds:
            break
        done = out / f"round{r}" / "sft" / "summary.json"
        if done.is_file() and json.loads(done.read_text()).get("status") == "done":
            sft = json.loads(done.read_text())
        else:
            sft = distill(summary["model_dir"], sft_base, tasks, out / f"round{r}" / "sft", cfg)
        history[-1]["distill"] = sft["distill"]
        current = sft["model_dir"]
    result = {"status": "done", "rounds": rounds, "history": history, **summary}
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result
