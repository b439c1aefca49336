"""The training loop shared by pre-training, mid-training and later SFT/RL.

`Trainer(model, optimizer, schedule, loader, config, out_dir)` runs optimizer steps on the
batches of a loader (dicts with `input_ids`, `labels`, optionally `position_ids`,
`segment_ids`, `attention_mask`). One step:
  1. reads the schedules at the tokens seen so far: LR, tokens per step (→ micro-batches to
     accumulate), MTP weight, balance-bias rate;
  2. sums the loss function's normalisers over the step's micro-batches and ranks, then runs
     forward (under autocast) + backward per micro-batch, syncing gradients on the last only;
  3. clips the global gradient norm and steps the optimizer (a non-finite norm skips the step);
  4. updates the routers' loss-free balance biases from the step's all-reduced expert loads;
  5. writes a metrics.jsonl record and calls the hooks.
`train()` loops steps until a token or step budget, checkpointing every `checkpoint_every`
steps and at the end; `resume()` restores model, optimizer, schedule, tokens seen, stage,
RoPE base, loader position and RNG, so the loss curve continues exactly.

The model may be wrapped (DDP or FSDP2, see glm45.train.distributed) before the optimizer is
built; the trainer reaches the plain model through `unwrap`.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from glm45.runtime import check_dtype_name, resolve_dtype
from glm45.train.balance import global_loads, max_violation, router_bias_buffers, update_balance_bias
from glm45.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from glm45.train.distributed import DistInfo, gradient_sync, init_distributed, is_fsdp, sharding_units, unwrap
from glm45.train.loss import LMLoss, LossFunction, StepContext
from glm45.train.metrics import MetricsLog, read_metrics, write_json_atomic
from glm45.train.schedules import ScheduleConfig, apply_lr

class TrainerError(ValueError):
    """A trainer setting or call that cannot work."""


@dataclass
class TrainConfig:
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off (the norm is still logged)
    autocast_dtype: str = "auto"  # "auto": bf16 where it is fast here (runtime.compute_dtype), else fp32
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward
    compile: bool = False  # torch.compile each decoder layer (opt-in)
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: only at the end of train()
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    progress: bool = True  # tqdm bar on the main rank
    plots: bool = True  # PNG plots with every summary
    name: str = "train"  # the "stage" field of summary.json

    def __post_init__(self) -> None:
        try:
            check_dtype_name(self.autocast_dtype, "autocast_dtype")
        except ValueError as e:
            raise TrainerError(str(e)) from None
        if self.grad_clip < 0:
            raise TrainerError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0:
            raise TrainerError("checkpoint_every and keep_checkpoints must be >= 0")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens seen (all ranks, padding included); the schedules' clock
    stage: str = "train"
    stage_tokens: int = 0  # tokens seen in the current stage


class TrainerHook:
    """Override what you need; every method is called on every rank."""

    def on_step_end(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        pass

    def on_train_end(self, trainer: "Trainer", summary: dict[str, Any]) -> None:
        pass


def micro_batches_per_step(batch_tokens: int, seq_len: int, micro_batch: int, world_size: int) -> int:
    """Micro-batches each rank accumulates so a step holds about `batch_tokens` tokens (at least 1)."""
    return max(1, round(batch_tokens / (seq_len * micro_batch * world_size)))


class Trainer:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig,
                 loader: Iterable[dict[str, torch.Tensor]] | None, config: TrainConfig | None = None,
                 out_dir: str | Path = "runs/train", *, loss_fn: LossFunction | None = None,
                 hooks: Sequence[TrainerHook] = (), info: DistInfo | None = None, stage: str = "train"):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir)
        self.loss_fn = loss_fn or LMLoss()
        self.hooks = list(hooks)
        self.info = info or init_distributed(next(model.parameters()).device)
        self.state = TrainState(stage=stage)
        self.inner = unwrap(model)
        self.autocast_dtype = resolve_dtype(self.config.autocast_dtype, self.info.device)
        self.biases = list(router_bias_buffers(self.inner).values())
        if hasattr(self.inner, "gradient_checkpointing"):
            self.inner.gradient_checkpointing = self.config.gradient_checkpointing
        if self.config.compile:
            for block in sharding_units(self.inner):
                block.compile()
        self.loader = loader
        self._iter: Iterator | None = None
        self._pending_loader: tuple[str, Any] | None = None  # (stage, loader state) read by resume()
        self._resumed_step: int | None = None
        self._last_saved_step: int | None = None
        self._log: MetricsLog | None = None
        self._session = {"t0": time.perf_counter(), "tokens": 0, "steps": 0}
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- paths
    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def rope_theta(self) -> float | None:
        cfg = getattr(self.inner, "config", None)
        return getattr(cfg, "rope_theta", None)

    # ----------------------------------------------------------------- stages and data
    def start_stage(self, name: str, loader: Iterable[dict[str, torch.Tensor]],
                    rope_theta: float | None = None) -> None:
        """Train on `loader` from now on. Continuing the stage a resumed checkpoint was in puts
        the loader back where it was; a new stage starts its token count at 0 and sets its RoPE
        base (the mid-training 10k → 1M change). Tokens seen, and so the schedules, carry on."""
        pending, self._pending_loader = self._pending_loader, None
        if name == self.state.stage and pending is not None and pending[0] == name:
            if pending[1] is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(pending[1])
        elif name != self.state.stage:
            self.state.stage, self.state.stage_tokens = name, 0
            if rope_theta is not None and rope_theta != self.rope_theta:
                self.inner.set_rope_theta(rope_theta)
        self.loader, self._iter = loader, None

    def _fetch_step(self) -> list[dict[str, torch.Tensor]] | None:
        """The micro-batches of the next step, or None when the loader (on any rank) runs dry."""
        if self._iter is None:
            self._iter = iter(self.loader)
        first = next(self._iter, None)
        batches = [] if first is None else [first]
        if first is not None:
            B, T = first["input_ids"].shape
            target = self.schedule.batch_tokens_at(self.state.tokens, T)
            for _ in range(micro_batches_per_step(target, T, B, self.info.world_size) - 1):
                b = next(self._iter, None)
                if b is None:
                    break
                batches.append(b)
            full = len(batches) == micro_batches_per_step(target, T, B, self.info.world_size)
        else:
            full = False
        short = self.info.all_reduce_sum(torch.tensor([0.0 if full else 1.0]))
        return batches if short.item() == 0 else None

    # ----------------------------------------------------------------- one step
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.info.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train_step(self, micro_batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """One optimizer step over `micro_batches` (this rank's share of the global batch);
        logs it and returns its metrics record."""
        if not micro_batches:
            raise TrainerError("train_step needs at least one micro-batch")
        t0 = time.perf_counter()
        info, sched = self.info, self.schedule
        tokens_before = self.state.tokens
        lr = sched.lr_at(tokens_before)
        apply_lr(self.optimizer, lr)
        batches = [self._to_device(b) for b in micro_batches]

        local: dict[str, float] = {}
        for b in batches:
            for k, v in self.loss_fn.counts(b).items():
                local[k] = local.get(k, 0.0) + v
        keys = sorted(local)
        positions = float(sum(b["input_ids"].numel() for b in batches))
        vec = info.all_reduce_sum(torch.tensor([local[k] for k in keys] + [positions], dtype=torch.float64))
        counts = dict(zip(keys, vec[:-1].tolist()))
        step_tokens = int(vec[-1].item())
        ctx = StepContext(step=self.state.step, tokens=tokens_before, mtp_weight=sched.mtp_weight_at(tokens_before),
                          counts=counts)

        self.model.train()
        logs: dict[str, torch.Tensor] = {}
        load_LE = None
        for i, b in enumerate(batches):
            with gradient_sync(self.model, i == len(batches) - 1):
                with torch.autocast(info.device.type, dtype=self.autocast_dtype,
                                    enabled=self.autocast_dtype != torch.float32):
                    out = self.loss_fn(self.model, b, ctx)
                # DDP and FSDP average gradients over ranks; the shares are of a global sum.
                (out.loss * info.world_size).backward()
            for k, v in out.logs.items():
                logs[k] = logs.get(k, 0.0) + v.detach().double()
            if out.expert_load is not None:
                load_LE = out.expert_load if load_LE is None else load_LE + out.expert_load

        grad_norm = self._clip_gradients()
        finite = math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        violation = None
        bias_rate = sched.bias_rate_at(tokens_before)
        if load_LE is not None:
            loads = global_loads(load_LE)
            if finite:  # loads cover the main MoE layers, then the MTP layer when it ran
                update_balance_bias(self.biases[:loads.shape[0]], loads, bias_rate, reduce=False)
            violation = [round(v, 6) for v in max_violation(loads).tolist()]

        log_keys = sorted(logs)
        log_vec = info.all_reduce_sum(torch.stack([logs[k].reshape(()).cpu() for k in log_keys])) if log_keys else []
        self.state.step += 1
        self.state.tokens += step_tokens
        self.state.stage_tokens += step_tokens
        seconds = time.perf_counter() - t0
        self._session["tokens"] += step_tokens
        self._session["steps"] += 1
        record: dict[str, Any] = {"step": self.state.step, "stage": self.state.stage, "tokens": self.state.tokens}
        record.update({k: float(v) for k, v in zip(log_keys, log_vec)})
        record.update({
            "lr": lr, "batch_tokens": step_tokens, "seq_len": int(batches[0]["input_ids"].shape[1]),
            "micro_batches": len(batches), "grad_norm": grad_norm, "mtp_weight": ctx.mtp_weight,
            "bias_rate": bias_rate, "max_violation": violation, "rope_theta": self.rope_theta,
            "tokens_per_s": round(step_tokens / max(seconds, 1e-9), 1), "step_s": round(seconds, 4),
        })
        if not finite:
            record["skipped"] = True
        if info.is_main:
            self._metrics().write(record)
        for hook in self.hooks:
            hook.on_step_end(self, record)
        return record

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _metrics(self) -> MetricsLog:
        if self._log is None:
            self._log = MetricsLog(self.metrics_path, resume_step=self._resumed_step)
        return self._log

    # ----------------------------------------------------------------- the loop
    def train(self, until_tokens: int | None = None, max_steps: int | None = None, *,
              write_summary: bool = True) -> dict[str, Any]:
        """Run steps until `until_tokens` tokens seen or `max_steps` steps done (both absolute,
        so a resumed run stops where the uninterrupted one would), or until the loader runs
        out. Checkpoints at the end; returns the summary (and writes summary.json and the plots
        unless `write_summary` is False, e.g. between the stages of one run)."""
        if self.loader is None:
            raise TrainerError("no data: pass a loader to Trainer() or call start_stage()")

        def more() -> bool:
            return ((until_tokens is None or self.state.tokens < until_tokens)
                    and (max_steps is None or self.state.step < max_steps))

        bar = None
        if self.config.progress and self.info.is_main and more():
            from tqdm import tqdm

            if until_tokens is not None:
                bar = tqdm(total=until_tokens, initial=self.state.tokens, unit="tok", unit_scale=True,
                           desc=self.state.stage, file=sys.stderr, dynamic_ncols=True)
            else:
                bar = tqdm(total=max_steps, initial=self.state.step, unit="step", desc=self.state.stage,
                           file=sys.stderr, dynamic_ncols=True)
        while more():
            batches = self._fetch_step()
            if batches is None:
                break
            record = self.train_step(batches)
            if bar is not None:
                bar.update(record["batch_tokens"] if until_tokens is not None else 1)
                bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}",
                                tok_s=f"{record['tokens_per_s']:.0f}", lr=f"{record['lr']:.2e}")
            every = self.config.checkpoint_every
            if every and self.state.step % every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self._last_saved_step != self.state.step:
            self.save_checkpoint()
        summary = self.write_summary() if write_summary else self.summary()
        for hook in self.hooks:
            hook.on_train_end(self, summary)
        return summary

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of everything the run needs to continue (collective)."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=opts)
        optim_state = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        meta = {"state": asdict(self.state), "schedule": asdict(self.schedule), "config": asdict(self.config),
                "rope_theta": self.rope_theta, "world_size": self.info.world_size}
        if hasattr(getattr(self.inner, "config", None), "to_hf"):
            meta["model_config"] = self.inner.config.to_hf()
        rank_state = {"loader": self.loader.state_dict() if hasattr(self.loader, "state_dict") else None,
                      "rng": rng_state()}
        path = save_checkpoint(self.checkpoint_root, self.state.step, model_state=model_state,
                               optimizer_state=optim_state, meta=meta, rank_state=rank_state, info=self.info,
                               keep=self.config.keep_checkpoints)
        self._last_saved_step = self.state.step
        for hook in self.hooks:
            hook.on_checkpoint(self, path)
        return path

    def resume(self, path: str | Path | None = None, *, restore_data: bool = True) -> Path | None:
        """Load a checkpoint (default: the newest under out_dir/checkpoints); returns its path,
        or None when there is none.

        Model, optimizer, schedule, step, tokens seen, stage and RoPE base always come back.
        With `restore_data` the loader position and RNG states do too (an interrupted run
        continuing); without it (mid-training starting from pre-training's checkpoint, maybe on
        another number of processes) they are left as they are."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        path = Path(path) if path is not None else latest_checkpoint(self.checkpoint_root)
        if path is None:
            return None
        model_state, optim_state, meta, rank_state = load_checkpoint(path, self.info.rank if restore_data else None)
        if restore_data and meta.get("world_size") != self.info.world_size:
            raise TrainerError(f"{path} was written by {meta.get('world_size')} processes and this run has "
                               f"{self.info.world_size}: the data position only resumes with the same number")
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=opts)
        if meta.get("rope_theta") is not None and meta["rope_theta"] != self.rope_theta:
            self.inner.set_rope_theta(meta["rope_theta"])
        self.schedule = ScheduleConfig(**meta["schedule"])
        current = self.state.stage
        self.state = TrainState(**meta["state"])
        if restore_data:
            self._pending_loader = (self.state.stage, rank_state.get("loader"))
            set_rng_state(rank_state["rng"])
        if self.loader is not None:  # a single-stage trainer: continue its stage, or start it
            self.start_stage(current, self.loader)
        self._resumed_step = self.state.step
        self._last_saved_step = self.state.step
        return path

    # ----------------------------------------------------------------- outputs
    def export_pretrained(self, directory: str | Path, tokenizer: Any = None) -> Path | None:
        """Save the model as a Hugging Face checkpoint directory (with the tokenizer, if given)
        on the main rank (collective under FSDP2, which gathers the shards)."""
        directory = Path(directory)
        if not is_fsdp(self.model):
            if self.info.is_main:
                self.inner.save_pretrained(directory, tokenizer=tokenizer)
            self.info.barrier()
            return directory if self.info.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            from glm45.model import GLM45ForCausalLM

            with torch.device("meta"):
                plain = GLM45ForCausalLM(dataclasses.replace(self.inner.config))
            plain.load_state_dict(state, assign=True)
            plain.save_pretrained(directory, tokenizer=tokenizer)
        self.info.barrier()
        return directory if self.info.is_main else None

    def summary(self, status: str = "done", **extra: Any) -> dict[str, Any]:
        """The run so far, in the report card's summary.json convention (metrics on the main rank)."""
        wall = time.perf_counter() - self._session["t0"]
        summary: dict[str, Any] = {
            "stage": self.config.name, "status": status, "wall_s": round(wall, 2), "tokens": self.state.tokens,
            "steps": self.state.step, "tokens_per_s": round(self._session["tokens"] / max(wall, 1e-9), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "current_stage": self.state.stage, "rope_theta": self.rope_theta, **extra,
        }
        if self.info.is_main:
            summary["metrics"] = _final_metrics(read_metrics(self.metrics_path))
        return summary

    def write_summary(self, status: str = "done", **extra: Any) -> dict[str, Any]:
        """summary.json and the PNG plots (on the main rank); returns the summary."""
        summary = self.summary(status, **extra)
        if self.info.is_main:
            if self.config.plots:
                from glm45.train.plots import plot_metrics

                summary["plots"] = [p.name for p in plot_metrics(self.metrics_path, self.out_dir / "plots")]
            write_json_atomic(self.out_dir / "summary.json", summary)
        return summary


def _final_metrics(rows: list[dict[str, Any]], last: int = 10) -> dict[str, float]:
    """Means over the last `last` steps of the losses, and the final LR and balance."""
    if not rows:
        return {}
    tail = rows[-last:]
    out: dict[str, float] = {}
    for key in ("loss", "mtp_loss", "aux_loss", "grad_norm", "tokens_per_s"):
        vals = [r[key] for r in tail if r.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    out["first_loss"] = rows[0].get("loss")
    out["lr"] = rows[-1].get("lr")
    if rows[-1].get("max_violation"):
        out["max_violation"] = max(rows[-1]["max_violation"])
    return {k: v for k, v in out.items() if v is not None}
