"""The RL loop in slime's shape (paper §3.5): rollout engines -> data buffer -> trainer -> weight sync.

Modes:
- "sync" (colocated, synchronous): each step rolls out a batch with the current weights — with
  dynamic sampling, extra prompts are rolled out until `prompts_per_step` groups carry reward
  variance (a group left over waits for the next step, one version old) — trains on it, and
  pushes the new weights before the next step.
- "async" (disaggregated, asynchronous): rollout workers (threads each driving its own engine,
  or Ray actors) keep drawing prompts and adding scored groups to the buffer while the trainer
  pops batches. Weights are pushed every `sync_every` steps; each worker applies them between
  its batches. Staleness is bounded twice: workers pause while the buffer holds
  `max_buffered_groups`, and a group generated more than `max_staleness` versions ago is dropped
  when popped.
Weights go to the engines as full precision or, with `fp8_rollout`, quantised block-wise to FP8
on every push (the engines then run FP8 layers).

Writes into `out`: metrics.jsonl (one record per step: reward, pass rate, response length,
entropy, clip fraction, staleness, samples/s, time split rollout/train/sync, held-out reward
when evaluated), summary.json, reward_curve.png, checkpoints/step_*/ (policy, optimizer, buffer,
rollout counters: a killed run resumes where it stopped) and model/ (the final policy).
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glm45.rl.buffer import DataBuffer, PromptItem
from glm45.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from glm45.rl.clients import LocalRolloutClient, RolloutClient, WeightUpdate
from glm45.rl.curriculum import CurriculumConfig, DifficultyCurriculum
from glm45.rl.dynamic_sampling import prompts_to_request
from glm45.rl.errors import NoLearningSignal, RLError
from glm45.rl.filters import has_reward_variance
from glm45.rl.overlong import OverlongConfig, apply_overlong
from glm45.rl.rollout import RolloutConfig, RolloutStats
from glm45.rl.sample import Sample, Status
from glm45.rl.sources import ListSource
from glm45.rl.temperature import DynamicTemperature, TemperatureConfig
from glm45.rl.trainer import PolicyTrainer, TrainerConfig

__all__ = ["RLConfig", "RLRun"]

MODES = ("sync", "async")


@dataclass
class RLConfig:
    out: str
    mode: str = "sync"
    steps: int = 20
    prompts_per_step: int = 8  # groups per training step
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dynamic_sampling: bool = True  # train only on groups with reward variance
    max_rollout_rounds: int = 4  # sync: rollout rounds per step to fill the batch
    overlong: OverlongConfig = field(default_factory=OverlongConfig)
    fp8_rollout: bool = False
    rollout_workers: int = 1  # engines (threads, or Ray actors)
    max_staleness: int = 2  # async: drop groups older than this many versions
    sync_every: int = 1  # async: push weights every N steps
    max_buffered_groups: int | None = None  # async: workers pause at this many (default prompts_per_step)
    worker_batch: int | None = None  # async: prompts per worker rollout call (default prompts_per_step / workers)
    eval_every: int = 5  # steps between held-out evaluations (0: only before and after)
    eval_temperature: float = 0.0
    # samples per held-out task; eval_reward is their mean, Avg@k (the paper reports Avg@32 and
    # Avg@8 at temperature > 0), so more than one needs eval_temperature > 0
    eval_samples: int = 1
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = True
    curriculum: CurriculumConfig | None = None
    dynamic_temperature: TemperatureConfig | None = None
    engine_max_batch: int = 64
    max_seq_len: int = 1024  # engine cache length (prompt + generated, whole trajectory for agents)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name, cls in (("rollout", RolloutConfig), ("trainer", TrainerConfig), ("overlong", OverlongConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        if isinstance(self.curriculum, dict):
            self.curriculum = CurriculumConfig(**self.curriculum)
        if isinstance(self.dynamic_temperature, dict):
            self.dynamic_temperature = TemperatureConfig(**self.dynamic_temperature)
        if self.mode not in MODES:
            raise RLError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 0 or self.prompts_per_step < 1 or self.rollout_workers < 0 or self.sync_every < 1:
            raise RLError("steps and rollout_workers must be >= 0 and prompts_per_step, sync_every >= 1")
        if self.max_staleness < 0 or self.max_rollout_rounds < 1:
            raise RLError("max_staleness must be >= 0 and max_rollout_rounds >= 1")
        if self.eval_samples < 1 or (self.eval_samples > 1 and self.eval_temperature <= 0):
            raise RLError(f"eval_samples must be >= 1, and more than one needs eval_temperature > 0 (greedy "
                          f"samples are all the same); got eval_samples {self.eval_samples}, "
                          f"eval_temperature {self.eval_temperature}")


class _Locked:
    """A data source shared by rollout threads and the trainer (the curriculum): one lock
    around taking prompts, recording rollouts and checkpointing."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.lock = threading.Lock()

    def take(self, n: int) -> list[Any]:
        with self.lock:
            return self.source.take(n)

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.source.load_state_dict(state)


@dataclass
class _Window:
    """What the rollouts produced since the last training step."""

    rewards: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    groups: int = 0
    groups_solved: int = 0  # at least one sample with reward >= 0.5
    groups_kept: int = 0
    tokens: int = 0
    rollout_seconds: float = 0.0


class RLRun:
    @classmethod
    def from_pretrained(cls, cfg: RLConfig, model_dir: str | Path, train_tasks: Sequence[Any],
                        eval_tasks: Sequence[Any] = ()) -> "RLRun":
        """A run of the checkpoint in `model_dir` (loaded in fp32, with its tokenizer), rolled out
        by the in-process engine."""
        import torch

        from glm45.model import GLM45ForCausalLM
        from glm45.tokenizer import GLMTokenizer

        model = GLM45ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return cls(cfg, model, GLMTokenizer.from_pretrained(model_dir), train_tasks, eval_tasks)

    def __init__(self, cfg: RLConfig, model: Any, tokenizer: Any, train_tasks: Sequence[Any],
                 eval_tasks: Sequence[Any] = (), *, clients: Sequence[RolloutClient] | None = None,
                 sync_targets: Sequence[Any] | None = None) -> None:
        """`clients`: the rollout engines (default: `rollout_workers` in-process engines);
        `sync_targets`: everything pushed weights go to (default: the clients; the local
        engines are always included)."""
        if not train_tasks:
            raise RLError("no training tasks")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.tokenizer = tokenizer
        self.eval_tasks = list(eval_tasks)
        self.trainer = PolicyTrainer(model, tokenizer.pad_token_id, cfg.trainer)
        self.curriculum = None
        if cfg.curriculum is not None:
            self.curriculum = DifficultyCurriculum(train_tasks, cfg.curriculum, key=_task_key)
            source: Any = _Locked(self.curriculum)
        else:
            source = ListSource(list(train_tasks), shuffle=True, seed=cfg.seed)
        self.buffer = DataBuffer(source, filters=[has_reward_variance] if cfg.dynamic_sampling else [],
                                 max_staleness=cfg.max_staleness if cfg.mode == "async" else None, seed=cfg.seed)
        self._source_lock = source.lock if isinstance(source, _Locked) else threading.Lock()
        self.temperature = (DynamicTemperature(cfg.dynamic_temperature, self._score_at_temperature)
                            if cfg.dynamic_temperature is not None else None)
        self.clients = list(clients) if clients is not None else self._local_clients()
        targets = list(sync_targets) if sync_targets is not None else list(self.clients)
        if clients is None:
            targets += [c for c in self.clients if c not in targets]
        self.sync_targets = targets
        if not self.clients and cfg.mode == "sync":
            raise RLError("sync mode needs at least one rollout engine")
        self._eval_client: LocalRolloutClient | None = None
        self._lock = threading.Lock()
        self._window = _Window()
        self.counters = {"samples_generated": 0, "groups_generated": 0, "tokens_generated": 0, "samples_trained": 0,
                         "rollout_calls": 0}
        self.times = {"rollout": 0.0, "train": 0.0, "sync": 0.0, "eval": 0.0}
        self.step = 0
        self.evals: list[dict[str, float]] = []

    # ---- setup ---------------------------------------------------------------------------------
    def _local_clients(self) -> list[LocalRolloutClient]:
        return [LocalRolloutClient(copy.deepcopy(self.model), self.tokenizer, self.cfg.rollout, fp8=self.cfg.fp8_rollout,
                                   max_batch_size=self.cfg.engine_max_batch, max_seq_len=self.cfg.max_seq_len,
                                   seed=self.cfg.seed + i)
                for i in range(self.cfg.rollout_workers)]

    @property
    def rollout_temperature(self) -> float:
        return self.temperature.temperature if self.temperature is not None else self.cfg.rollout.temperature

    # ---- rollout side --------------------------------------------------------------------------
    def ingest_external(self, group: list[Sample]) -> bool:
        """Buffer a group generated elsewhere (the agent endpoint); returns whether it was kept."""
        return self._ingest([group], RolloutStats(samples=len(group)))[0]

    def _ingest(self, groups: list[list[Sample]], stats: RolloutStats) -> list[bool]:
        """Score bookkeeping and buffering of freshly generated groups (any thread)."""
        kept_flags = []
        for g in groups:
            apply_overlong(g, self.cfg.overlong)
            if self.curriculum is not None:
                with self._source_lock:
                    self.curriculum.record_group(g)
            kept = self.buffer.add_group(g)
            kept_flags.append(kept)
            with self._lock:
                w = self._window
                w.rewards += [float(s.reward) for s in g]
                w.lengths += [len(s.response_ids) for s in g]
                w.truncated += sum(s.status is Status.TRUNCATED for s in g)
                w.groups += 1
                w.groups_solved += any(s.reward >= 0.5 for s in g)
                w.groups_kept += kept
        with self._lock:
            self._window.tokens += stats.tokens
            self._window.rollout_seconds += stats.seconds
            self.counters["samples_generated"] += sum(len(g) for g in groups)
            self.counters["groups_generated"] += len(groups)
            self.counters["tokens_generated"] += stats.tokens
            self.counters["rollout_calls"] += 1
        return kept_flags

    def _rollout_parallel(self, items: list[PromptItem]) -> None:
        """Roll `items` out over all clients at once (sync mode) and ingest the groups."""
        parts = [items[i::len(self.clients)] for i in range(len(self.clients))]
        jobs = [(c, p) for c, p in zip(self.clients, parts) if p]
        if len(jobs) == 1:
            c, p = jobs[0]
            self._ingest(*c.rollout(p, temperature=self.rollout_temperature))
            return
        errors: list[BaseException] = []

        def run(c: RolloutClient, p: list[PromptItem]) -> None:
            try:
                self._ingest(*c.rollout(p, temperature=self.rollout_temperature))
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(e)

        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _collect_sync(self) -> list[list[Sample]]:
        n = self.cfg.prompts_per_step
        for _ in range(self.cfg.max_rollout_rounds):
            need = n - len(self.buffer)
            if need <= 0:
                break
            stats = self.buffer.stats
            keep_rate = stats["groups_accepted"] / stats["groups_received"] if stats["groups_received"] else None
            items = self.buffer.next_prompts(prompts_to_request(need, keep_rate))
            if not items:
                break
            self._rollout_parallel(items)
        return self.buffer.pop_groups(n)

    def _worker(self, client: RolloutClient, stop: threading.Event, errors: list[BaseException]) -> None:
        cfg = self.cfg
        limit = cfg.max_buffered_groups or cfg.prompts_per_step
        batch = cfg.worker_batch or max(1, math.ceil(cfg.prompts_per_step / len(self.clients)))
        try:
            while not stop.is_set():
                if len(self.buffer) >= limit:
                    stop.wait(0.005)
                    continue
                items = self.buffer.next_prompts(batch)
                if not items:
                    return
                self._ingest(*client.rollout(items, temperature=self.rollout_temperature))
        except BaseException as e:  # noqa: BLE001 - the trainer thread re-raises it
            errors.append(e)
            stop.set()

    def _pop_async(self, stop: threading.Event, errors: list[BaseException]) -> list[list[Sample]]:
        got: list[list[Sample]] = []
        while len(got) < self.cfg.prompts_per_step:
            if errors:
                raise errors[0]
            if stop.is_set():
                raise RLError("the rollout workers stopped (the prompt source ran out)")
            got += self.buffer.pop_groups(self.cfg.prompts_per_step - len(got), timeout=0.2,
                                          current_version=self.trainer.version)
        return got

    # ---- weights -------------------------------------------------------------------------------
    def _push(self) -> dict[str, float]:
        update = WeightUpdate(self.model, self.trainer.version, fp8=self.cfg.fp8_rollout)
        for target in self.sync_targets:
            target.push(update)
        if self.cfg.mode == "sync":
            for c in self.clients:  # colocated: the engines take the weights before the next step
                apply = getattr(c, "apply_pending", None)
                if apply is not None:
                    apply()
        return update.timings

    # ---- evaluation ----------------------------------------------------------------------------
    def _evaluator(self) -> LocalRolloutClient:
        if self._eval_client is None:
            self._eval_client = LocalRolloutClient(copy.deepcopy(self.model), self.tokenizer, self.cfg.rollout,
                                                   max_batch_size=self.cfg.engine_max_batch,
                                                   max_seq_len=self.cfg.max_seq_len, seed=self.cfg.seed)
        else:
            self._eval_client.push(WeightUpdate(self.model, self.trainer.version))
        return self._eval_client

    def evaluate(self, temperature: float | None = None, tasks: Sequence[Any] | None = None) -> dict[str, float]:
        """Held-out reward of the current policy: the mean over `eval_samples` samples per task
        (Avg@k), greedy by default (one sample at eval_temperature 0). Evaluating at another
        `temperature` (the dynamic-temperature search) takes as many samples, one when greedy."""
        tasks = self.eval_tasks if tasks is None else list(tasks)
        if not tasks:
            return {}
        t0 = time.perf_counter()
        items = [PromptItem(i, t) for i, t in enumerate(tasks)]
        temp = self.cfg.eval_temperature if temperature is None else temperature
        k = self.cfg.eval_samples if temp > 0 else 1
        groups, _ = self._evaluator().rollout(items, temperature=temp, group_size=k)
        samples = [s for g in groups for s in g]
        self.times["eval"] += time.perf_counter() - t0
        return {"eval_reward": sum(s.reward for s in samples) / len(samples),
                "eval_pass_rate": sum(s.reward >= 0.5 for s in samples) / len(samples),
                "eval_response_len": sum(len(s.response_ids) for s in samples) / len(samples)}

    def _score_at_temperature(self, temperature: float) -> float:
        return self.evaluate(temperature=temperature)["eval_reward"]

    # ---- checkpoints ---------------------------------------------------------------------------
    def _loop_state(self) -> dict[str, Any]:
        return {"weight_version": self.trainer.version, "counters": dict(self.counters), "times": dict(self.times),
                "buffer": self.buffer.state_dict(), "evals": list(self.evals),
                "curriculum": self.curriculum.state_dict() if self.curriculum is not None else None,
                "temperature": self.temperature.state_dict() if self.temperature is not None else None,
                "config": asdict(self.cfg)}

    def save(self) -> Path:
        return save_checkpoint(self.out / "checkpoints", self.step, model=self.model, tokenizer=self.tokenizer,
                               trainer_state=self.trainer.state_dict(), state=self._loop_state(),
                               keep=self.cfg.keep_checkpoints)

    def _resume(self) -> bool:
        path = latest_checkpoint(self.out / "checkpoints") if self.cfg.resume else None
        if path is None:
            return False
        from glm45.checkpoint.hf import load_pretrained

        model_dir, trainer_state, state = load_checkpoint(path)
        loaded = load_pretrained(model_dir, dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(loaded.state_dict())
        self.trainer.load_state_dict(trainer_state)
        self.buffer.load_state_dict(state["buffer"])
        if self.curriculum is not None and state.get("curriculum") is not None:
            self.curriculum.load_state_dict(state["curriculum"])
        if self.temperature is not None and state.get("temperature") is not None:
            self.temperature.load_state_dict(state["temperature"])
        self.counters.update(state["counters"])
        self.times.update(state["times"])
        self.evals = list(state["evals"])
        self.step = int(state["step"])
        self._push()  # the engines started from the run's first weights
        for c in self.clients:
            apply = getattr(c, "apply_pending", None)
            if apply is not None:
                apply()
        return True

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from glm45.train.metrics import MetricsLog, write_json_atomic

        resumed = self._resume()
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step if resumed else None)
        if not resumed and self.eval_tasks:
            self.evals.append({"step": 0, **self.evaluate()})
            log.write({"step": 0, "weight_version": 0, **self.evals[-1]})
        t_start = time.perf_counter()
        start_step = self.step
        stop, errors = threading.Event(), []
        workers = []
        if self.cfg.mode == "async":
            workers = [threading.Thread(target=self._worker, args=(c, stop, errors), name=f"rollout-{i}", daemon=True)
                       for i, c in enumerate(self.clients)]
            for w in workers:
                w.start()
        try:
            last = time.perf_counter()
            while self.step < self.cfg.steps:
                record = self._train_step(stop, errors)
                now = time.perf_counter()
                record["time_step"] = now - last
                gen = record["samples_generated"]
                record["samples_per_s"] = gen / record["time_step"] if record["time_step"] > 0 else 0.0
                record["trained_samples_per_s"] = record["samples_trained"] / record["time_step"]
                last = now
                if self.eval_tasks and (self.step == self.cfg.steps or
                                        (self.cfg.eval_every and self.step % self.cfg.eval_every == 0)):
                    self.evals.append({"step": self.step, **self.evaluate()})
                    record.update({k: v for k, v in self.evals[-1].items() if k != "step"})
                    last = time.perf_counter()  # evaluation time is not rollout throughput
                log.write(record)
                if self.cfg.progress:
                    _progress(record, self.cfg.steps)
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 \
                        and self.step < self.cfg.steps:
                    self.save()
        finally:
            stop.set()
            for w in workers:
                w.join()
        wall = time.perf_counter() - t_start
        if self.step > start_step:
            self.save()
        final_dir = self.out / "model"
        self.model.save_pretrained(final_dir, tokenizer=self.tokenizer)
        summary = self._summary(wall, start_step, final_dir)
        write_json_atomic(self.out / "summary.json", summary)
        from glm45.rl.plots import plot_rewards

        plot_rewards(self.out / "metrics.jsonl", self.out / "reward_curve.png")
        for c in {id(c): c for c in [*self.clients, *self.sync_targets]}.values():
            c.close()
        return summary

    def _train_step(self, stop: threading.Event, errors: list[BaseException]) -> dict[str, Any]:
        t0 = time.perf_counter()
        groups = self._collect_sync() if self.cfg.mode == "sync" else self._pop_async(stop, errors)
        t1 = time.perf_counter()
        if not groups:
            raise NoLearningSignal("no group with a learning signal after "
                                   f"{self.cfg.max_rollout_rounds} rollout rounds (every group's rewards were "
                                   "equal); the tasks may be too easy or too hard for this policy — try "
                                   "--no-dynamic-sampling or other tasks")
        version_before = self.trainer.version
        train = self.trainer.step(groups)
        t2 = time.perf_counter()
        timings: dict[str, float] = {}
        self.step += 1
        if self.cfg.mode == "sync" or self.step % self.cfg.sync_every == 0:
            timings = self._push()
        t3 = time.perf_counter()
        with self._lock:
            w, self._window = self._window, _Window()
        samples = [s for g in groups for s in g]
        self.counters["samples_trained"] += len(samples)
        stale = [s.staleness(version_before) for s in samples]
        times = {"rollout": t1 - t0, "train": t2 - t1, "sync": t3 - t2}
        for k, v in times.items():
            self.times[k] += v
        record: dict[str, Any] = {
            "step": self.step, "weight_version": self.trainer.version,
            "reward_mean": _mean(w.rewards), "pass_rate": _mean([float(r >= 0.5) for r in w.rewards]),
            "pass_at_k": w.groups_solved / w.groups if w.groups else None,
            "response_len": _mean(w.lengths), "truncated_frac": w.truncated / len(w.rewards) if w.rewards else None,
            "groups_generated": w.groups, "keep_rate": w.groups_kept / w.groups if w.groups else None,
            "samples_generated": len(w.rewards), "tokens_generated": w.tokens, "samples_trained": len(samples),
            "train_reward_mean": _mean([s.reward for s in samples]),
            "staleness_mean": _mean(stale), "staleness_max": max(stale),
            "time_rollout": times["rollout"], "time_train": times["train"], "time_sync": times["sync"],
            "rollout_busy_s": w.rollout_seconds, "temperature": self.rollout_temperature,
            "buffer_groups": len(self.buffer),
            **{k: train[k] for k in ("loss", "entropy", "clip_frac", "clip_frac_high", "clip_frac_low", "approx_kl",
                                     "kl_ref", "ratio_max", "grad_norm", "trained_tokens", "recomputed_logprobs")
               if k in train},
        }
        if timings:
            record["sync_bytes"] = timings.get("bytes")
        if self.curriculum is not None:
            with self._source_lock:
                record["curriculum_switched"] = self.curriculum.end_step()
                record["curriculum_stage"] = self.curriculum.stage
        if self.temperature is not None and w.rewards:
            record["temperature_reselected"] = self.temperature.update(_mean(w.rewards))
        return record

    def _summary(self, wall: float, start_step: int, final_dir: Path) -> dict[str, Any]:
        from glm45.train.metrics import read_metrics

        rows = [r for r in read_metrics(self.out / "metrics.jsonl") if "reward_mean" in r and r.get("reward_mean") is not None]
        head, tail = rows[:3], rows[-3:]
        busy = self.times["rollout"] + self.times["train"] + self.times["sync"]
        return {
            "status": "done", "mode": self.cfg.mode, "steps": self.step, "steps_this_run": self.step - start_step,
            "reward_first": _mean([r["reward_mean"] for r in head]), "reward_last": _mean([r["reward_mean"] for r in tail]),
            "eval_first": self.evals[0] if self.evals else None, "eval_last": self.evals[-1] if self.evals else None,
            "evals": self.evals, "counters": self.counters, "time_split_s": self.times,
            "samples_per_s": self.counters["samples_generated"] / busy if busy else None,
            "wall_s_this_run": wall, "model_dir": str(final_dir), "config": asdict(self.cfg),
        }


def _task_key(task: Any) -> Any:
    if isinstance(task, dict) and isinstance(task.get("id"), (str, int)):
        return task["id"]
    raise RLError("the curriculum needs task records with a str or int 'id'")


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _progress(record: dict[str, Any], steps: int) -> None:
    parts = [f"step {record['step']}/{steps}"]
    for key, fmt in (("reward_mean", "reward {:.3f}"), ("pass_rate", "pass {:.2f}"), ("response_len", "len {:.0f}"),
                     ("staleness_mean", "stale {:.2f}"), ("samples_per_s", "{:.1f} samples/s"),
                     ("eval_reward", "eval {:.3f}")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    print(" | ".join(parts), file=sys.stderr, flush=True)
