"""Expert model iteration (paper §3): train reasoning, agent and general experts from one base,
sample from each with rejection sampling, and distill what passes into one hybrid model.

    glm45 sft experts --base DIR --out DIR [--small]

1. Cold start: each expert is fine-tuned from the base on its domain's reference data
   (glm45.sft.builtin: worked arithmetic and code; tool-use trajectories; short general answers).
   With `expert_rl`, each expert then runs GRPO in its domain's environment (`glm45.rl`,
   EXPERT_RL_TASKS: verifiable arithmetic, step-wise function calls, instruction following), as
   the paper's experts are cold-start SFT plus RL; its held-out reward is recorded before and after.
2. Sampling, per expert on fresh training prompts of its domain:
   - reasoning and general: `rejection_sample` (form filters, math-verify / sandboxed tests /
     reward-model hook, prompt selection by response length, response scaling to k responses);
   - agent: trajectories of the built-in tool tasks with the rule-based simulated user, kept when
     the terminal-state and protocol judges accept them and the form filters pass them.
3. Overall SFT: the base is fine-tuned on everything accepted (with `mix_reference`, also on the
   cold-start data: small experts sample little that passes, and the loop should still run). Reasoning and agent samples are
   re-balanced between thinking and non-thinking renderings (`distill_non_thinking_ratio`);
   general answers stay non-thinking, as quick replies should.
Every model (base, experts, hybrid) can be scored on the held-out checks of glm45.sft.evaluate.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glm45.data.document import Document, write_documents
from glm45.infer import Engine
from glm45.rl.errors import NoLearningSignal
from glm45.sft.agentic.judge import ProtocolJudge, StateJudge, judge_trajectories
from glm45.sft.agentic.rollout import RolloutConfig, generate_trajectories
from glm45.sft.agentic.toolkit import Toolkit
from glm45.sft.builtin import AGENT_KINDS, agent_tasks, prompt_samples, reference_samples
from glm45.sft.dataset import SFTDataConfig
from glm45.sft.evaluate import EvalConfig, evaluate_model
from glm45.sft.filters import FilterPipeline, form_filters
from glm45.eval.local import LocalBackend
from glm45.sft.records import SFTError, sample_document
from glm45.sft.rejection import RejectionConfig, SamplingConfig, rejection_sample
from glm45.sft.train import SFTTrainConfig, finetune
from glm45.sft.verifiers import default_pipeline


# The paper's three experts, and the RL environment of each (a glm45.rl task set).
EXPERT_DOMAINS = ("reasoning", "agent", "general")
EXPERT_RL_TASKS = {"reasoning": "arithmetic", "agent": "tools", "general": "ifeval"}


@dataclass
class ExpertRLConfig:
    """GRPO for one expert after its cold start (paper §3.2–3.4), on its domain's task set."""

    steps: int = 20
    prompts_per_step: int = 8
    group_size: int = 8
    max_tokens: int = 128
    lr: float = 5e-5
    dynamic_sampling: bool = True  # train only on groups whose rewards differ
    n_eval: int = 64  # held-out (test split) prompts scored greedily before and after
    eval_every: int = 5


@dataclass
class ExpertIterationConfig:
    seed: int = 0
    cold_start: dict[str, int] = field(default_factory=lambda: {"reasoning": 1200, "agent": 600, "general": 150})
    prompts: dict[str, int] = field(default_factory=lambda: {"reasoning": 300, "agent": 150, "general": 80})
    difficulty: tuple[int, ...] = (1, 2)
    agent_kinds: tuple[str, ...] = AGENT_KINDS
    n_distractors: int = 1
    rejection: RejectionConfig = field(default_factory=lambda: RejectionConfig(
        first_pass=1, k=4, keep_fraction=0.5, sampling=SamplingConfig(temperature=0.7, max_tokens=256)))
    agent_samples: int = 2  # trajectories per agent task
    agent_max_tokens: int = 256
    expert_train: SFTTrainConfig = field(default_factory=lambda: SFTTrainConfig(epochs=4.0))
    distill_train: SFTTrainConfig = field(default_factory=lambda: SFTTrainConfig(epochs=4.0))
    data: SFTDataConfig = field(default_factory=lambda: SFTDataConfig(seq_len=2048, non_thinking_ratio=0.3))
    distill_non_thinking_ratio: float = 0.3
    mix_reference: bool = False  # also train the hybrid on the experts' cold-start data
    expert_rl: dict[str, ExpertRLConfig] = field(default_factory=dict)  # domain -> RL after the cold start
    evaluate: EvalConfig | None = field(default_factory=EvalConfig)
    max_batch_size: int = 32  # engine rows when sampling

    @classmethod
    def small(cls, seq_len: int = 1024) -> ExpertIterationConfig:
        """The loop on small data (minutes on a CPU with the tiny preset)."""
        return cls(cold_start={"reasoning": 120, "agent": 30, "general": 20},
                   prompts={"reasoning": 12, "agent": 6, "general": 6},
                   agent_kinds=("single", "irrelevant"), n_distractors=0,
                   rejection=RejectionConfig(first_pass=1, k=2, keep_fraction=0.5,
                                             sampling=SamplingConfig(temperature=0.7, max_tokens=48)),
                   agent_samples=1, agent_max_tokens=48,
                   expert_train=SFTTrainConfig(max_steps=12, batch_size=2),
                   distill_train=SFTTrainConfig(max_steps=12, batch_size=2),
                   data=SFTDataConfig(seq_len=seq_len, non_thinking_ratio=0.3), mix_reference=True, evaluate=None,
                   max_batch_size=16)


def _engine(model_dir: str, config: ExpertIterationConfig) -> Engine:
    return Engine.from_pretrained(model_dir, max_batch_size=config.max_batch_size, max_seq_len=config.data.seq_len)


def cold_start_data(domain: str, config: ExpertIterationConfig) -> list[Document]:
    return reference_samples(domain, config.cold_start[domain], config.seed, difficulty=config.difficulty,
                             agent_kinds=config.agent_kinds, n_distractors=config.n_distractors)


def train_expert_rl(domain: str, model_dir: str, out: Path, config: ExpertIterationConfig) -> dict[str, Any]:
    """GRPO of one cold-started expert in its domain's environment; the summary of the run
    (its `model_dir` is the RL-trained expert)."""
    from glm45.rl.loop import RLConfig, RLRun
    from glm45.rl.rollout import RolloutConfig as RLRolloutConfig
    from glm45.rl.task_sets import CALL_KINDS, build_tasks
    from glm45.rl.trainer import TrainerConfig

    rl = config.expert_rl[domain]
    task = EXPERT_RL_TASKS[domain]
    options = {"arithmetic": {"difficulty": list(config.difficulty)}, "tools": {"kinds": CALL_KINDS}}.get(task, {})
    train = build_tasks(task, 8 * rl.steps * rl.prompts_per_step, config.seed, split="train", **options)
    evals = build_tasks(task, rl.n_eval, config.seed + 1, split="test", unique=True, **options)
    cfg = RLConfig(out=str(out), steps=rl.steps, prompts_per_step=rl.prompts_per_step,
                   rollout=RLRolloutConfig(group_size=rl.group_size, max_tokens=rl.max_tokens, seed=config.seed),
                   trainer=TrainerConfig(lr=rl.lr, dtype="float32"), dynamic_sampling=rl.dynamic_sampling,
                   eval_every=rl.eval_every, max_seq_len=config.data.seq_len, seed=config.seed, resume=False,
                   progress=False)
    return RLRun.from_pretrained(cfg, model_dir, train, evals).run()


def sample_domain(domain: str, model_dir: str, config: ExpertIterationConfig) -> tuple[list[Document], dict[str, Any]]:
    """Accepted samples of one expert on fresh prompts of its domain, and the counts."""
    backend = LocalBackend(_engine(model_dir, config))
    seed = config.seed + 1000  # prompts the cold start did not use (same split, other draws)
    n = config.prompts[domain]
    if domain == "agent":
        tasks = agent_tasks(n, seed, "train", config.agent_kinds, config.n_distractors)
        rollout = RolloutConfig(samples_per_task=config.agent_samples, temperature=config.rejection.sampling.temperature,
                                max_tokens=config.agent_max_tokens, seed=seed)
        trajectories = generate_trajectories(tasks, Toolkit.builtin(), backend, rollout)
        judged, judge_report = judge_trajectories(trajectories, [StateJudge(), ProtocolJudge()])
        kept, filter_report = FilterPipeline(form_filters(require_reasoning=False)).run(
            [sample_document(t.to_sample()) for t in judged])
        return kept, {"tasks": len(tasks), "trajectories": len(trajectories), "judges": judge_report,
                      "filters": filter_report, "accepted": len(kept)}
    prompts = prompt_samples(domain, n, seed, difficulty=config.difficulty, enable_thinking=domain != "general")
    return rejection_sample(prompts, backend, default_pipeline(), config.rejection)


def distillation_data(accepted: dict[str, list[Document]]) -> list[Document]:
    """Everything accepted, ready for the overall SFT: reasoning and agent samples lose their
    fixed mode so the data config's thinking ratio balances them; general stays non-thinking."""
    out = []
    for domain, docs in accepted.items():
        for d in docs:
            meta = {k: v for k, v in d.meta.items() if k not in ("rejected_by",)}
            if domain != "general":
                meta.pop("enable_thinking", None)
            out.append(Document(text="", id=d.id, source=f"distill-{domain}", meta=meta, messages=d.messages,
                                tools=d.tools))
    return out


def run_expert_iteration(base_dir: str, out_dir: str, config: ExpertIterationConfig | None = None,
                         log=print) -> dict[str, Any]:
    config = config or ExpertIterationConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"base": str(base_dir), "experts": {}, "sampling": {}}
    accepted: dict[str, list[Document]] = {}
    reference: list[Document] = []
    for domain in EXPERT_DOMAINS:
        data = cold_start_data(domain, config)
        reference += data
        write_documents(data, out / "cold_start" / f"{domain}.jsonl")
        log(f"[{domain}] cold start: {len(data)} samples")
        trained = finetune(base_dir, data, out / "experts" / domain, config.expert_train, config.data)
        summary["experts"][domain] = {k: trained[k] for k in ("model_dir", "steps", "first_loss", "final_loss")}
        log(f"[{domain}] expert: loss {trained['first_loss']:.3f} -> {trained['final_loss']:.3f}")
        expert_dir = trained["model_dir"]
        if domain in config.expert_rl:
            task = EXPERT_RL_TASKS[domain]
            try:
                rl = train_expert_rl(domain, expert_dir, out / "experts_rl" / domain, config)
            except NoLearningSignal as e:  # a weak expert may score the same on every sample
                summary["experts"][domain]["rl"] = {"task": task, "skipped": str(e)}
                log(f"[{domain}] RL on {task} skipped, the cold-start expert is sampled: {e}")
            else:
                expert_dir = rl["model_dir"]
                summary["experts"][domain]["rl"] = {
                    "task": task, "model_dir": expert_dir, "steps": rl["steps"],
                    "heldout_by_step": {e["step"]: e["eval_reward"] for e in rl["evals"]},
                    "reward_first": rl["reward_first"], "reward_last": rl["reward_last"]}
                log(f"[{domain}] RL on {task}: held-out reward {rl['evals'][0]['eval_reward']:.3f} -> "
                    f"{rl['evals'][-1]['eval_reward']:.3f} in {rl['steps']} steps")
        kept, report = sample_domain(domain, expert_dir, config)
        accepted[domain] = kept
        summary["sampling"][domain] = report
        write_documents(kept, out / "samples" / f"{domain}.jsonl")
        log(f"[{domain}] sampling: {report['accepted']} accepted")
    distill = distillation_data(accepted)
    summary["distilled_samples"] = len(distill)
    if config.mix_reference:
        distill += reference
    if not distill:
        raise SFTError("no sample passed rejection sampling, so there is nothing to distill; train the experts "
                       "longer (expert_train) or sample more prompts")
    write_documents(distill, out / "samples" / "distill.jsonl")
    data = SFTDataConfig(**{**asdict(config.data), "non_thinking_ratio": config.distill_non_thinking_ratio})
    hybrid = finetune(base_dir, distill, out / "hybrid", config.distill_train, data)
    summary["hybrid"] = {k: hybrid[k] for k in ("model_dir", "steps", "first_loss", "final_loss", "data")}
    log(f"[hybrid] {summary['distilled_samples']} distilled samples ({len(distill)} in all), loss {hybrid['first_loss']:.3f} -> {hybrid['final_loss']:.3f}")
    if config.evaluate is not None:
        experts = summary["experts"]
        models = {"base": str(base_dir), **{f"expert_{d}": experts[d]["model_dir"] for d in EXPERT_DOMAINS},
                  **{f"expert_{d}_rl": experts[d]["rl"]["model_dir"] for d in EXPERT_DOMAINS
                     if "model_dir" in experts[d].get("rl", {})},
                  "hybrid": hybrid["model_dir"]}
        summary["evaluation"] = {name: evaluate_model(_engine(d, config), config.evaluate) for name, d in models.items()}
    summary["seconds"] = time.perf_counter() - t0
    summary["config"] = asdict(config)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
