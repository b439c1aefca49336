"""Pre-training and mid-training runs: everything `glm45 pretrain` / `glm45 midtrain` do,
callable from Python (the speedrun) as `run_training(RunConfig(...))`.

A run: find the stage data (shard directories, or a stage spec built into shards under
`<out>/data/`), plan the stages (token budgets, RoPE bases), build or load the model, wrap it
for DDP/FSDP2, build Muon+AdamW and the schedules, resume if asked, train the stages, export
the final model as a Hugging Face directory `<out>/hf` (with the tokenizer).

Defaults follow paper §2.4 scaled to the budget: the schedules' switch points (batch-size
warm-up over the first 500B of ~23T tokens, bias rate and MTP weight changing at 15T) are
kept as fractions of the schedule's length. Pre-training's schedule ends at `total_tokens`
(default: its own budget); give `total_tokens` = pre + mid so mid-training continues the cosine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from glm45.config import ModelConfig
from glm45.data.document import DataError
from glm45.runtime import dtype_name, resolve_dtype
from glm45.train.checkpoint import latest_checkpoint, read_meta
from glm45.train.distributed import DistInfo, init_distributed, parallelize
from glm45.train.loss import LMLoss
from glm45.train.optim import build_optimizer
from glm45.train.schedules import ScheduleConfig
from glm45.train.stages import (StageData, StageError, TrainStage, discover_stages, plan_stages, run_stages,
                                select_stages)
from glm45.train.trainer import TrainConfig, Trainer

KINDS = {"pretrain": "concat", "midtrain": "best_fit"}  # command -> packing of the stages it picks
# Paper §2.4 switch points as fractions of the ~23T-token schedule.
PAPER_TOTAL_TOKENS = 23e12
BATCH_WARMUP_FRACTION = 500e9 / PAPER_TOTAL_TOKENS
SWITCH_FRACTION = 15e12 / PAPER_TOTAL_TOKENS
# Peak LR: the paper's for released sizes; small models take larger steps.
PRESET_LR = {"tiny": 3e-3, "nano": 3e-3, "micro": 1.5e-3}
PAPER_LR = 2.5e-4


class RunError(ValueError):
    """A run setting or input that cannot work, with what to do about it."""


@dataclass
class RunConfig:
    kind: str  # "pretrain" | "midtrain"
    data: str  # a shard directory, a directory of them (one per stage) or a stage spec file
    out: str
    preset: str = "nano"
    init: str | None = None  # midtrain: a pre-training output dir (continues its schedule) or an HF checkpoint
    stages: list[str] | None = None  # stage names to train, in order (default: by packing)
    tokenizer: str | None = None  # directory with tokenizer.json (spec building, HF export)
    tokens: int | None = None  # this command's budget (default: one epoch of each stage)
    total_tokens: int | None = None  # where the cosine ends (default: tokens seen at start + budget)
    seq_len: int | None = None  # stage specs: length of the first stage (later stages keep their ratio)
    batch_tokens: int | None = None  # tokens per step after warm-up (default 16 sequences)
    batch_start_tokens: int | None = None  # default a quarter of batch_tokens (paper: 16M -> 64M)
    micro_batch: int = 4  # sequences per forward per process
    lr: float | None = None
    min_lr_ratio: float = 0.1
    warmup_tokens: int | None = None  # default 2% of the schedule
    weight_decay: float = 0.1
    rope_theta: float | None = None  # pretrain: the model's RoPE base (default: the preset's)
    long_rope_theta: float = 1e6  # RoPE base from the first stage longer than pre-training's
    mtp_weight: float = 0.3
    mtp_weight_late: float = 0.1
    bias_rate: float = 1e-3
    aux_loss_weight: float = 1e-4
    grad_clip: float = 1.0
    autocast: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    parallel: str = "auto"  # auto | none | ddp | fsdp
    device: str = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the newest checkpoint in `out`
    seed: int = 0
    progress: bool = True
    export: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RunError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        for name in ("tokens", "total_tokens", "seq_len", "batch_tokens", "batch_start_tokens", "warmup_tokens"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise RunError(f"{name} must be > 0, got {v}")
        if self.micro_batch < 1:
            raise RunError(f"micro_batch must be >= 1, got {self.micro_batch}")
        if self.lr is not None and self.lr <= 0:
            raise RunError(f"lr must be > 0, got {self.lr}")


# ------------------------------------------------------------------------------------ data
def _load_tokenizer(path: str | Path):
    from glm45.tokenizer import GLMTokenizer

    return GLMTokenizer.from_pretrained(path)


def _scaled_specs(specs: list, seq_len: int | None) -> list:
    if seq_len is None:
        return specs
    base = specs[0].seq_len
    return [dataclasses.replace(s, seq_len=max(2, s.seq_len * seq_len // base)) for s in specs]


def resolve_stage_data(cfg: RunConfig, info: DistInfo) -> list[StageData]:
    """The selected stages' shard directories; a stage spec is built into `<out>/data/` first
    (on the main rank; a stage whose shards exist is not rebuilt)."""
    data = Path(cfg.data)
    if data.is_file():
        from glm45.data.stages import build_stage, load_stages

        specs = load_stages(data)
        if cfg.stages:
            names = {s.name for s in specs}
            missing = [n for n in cfg.stages if n not in names]
            if missing:
                raise RunError(f"no stages named {missing} in {data} (it has {sorted(names)})")
            specs = [next(s for s in specs if s.name == n) for n in cfg.stages]
        else:
            specs = [s for s in specs if s.packing == KINDS[cfg.kind]]
            if not specs:
                raise RunError(f"{data} has no stage with {KINDS[cfg.kind]} packing for {cfg.kind}; name stages "
                               "with --stages")
        specs = _scaled_specs(specs, cfg.seq_len)
        root = Path(cfg.out) / "data"
        if info.is_main:
            if cfg.tokenizer is None:
                raise RunError("building shards from a stage spec needs --tokenizer DIR")
            tokenizer = _load_tokenizer(cfg.tokenizer)
            for spec in specs:
                if not (root / spec.name / "index.json").is_file():
                    build_stage(spec, tokenizer, root / spec.name, progress=cfg.progress)
        info.barrier()
        return [discover_stages(root / s.name)[0] for s in specs]
    found = discover_stages(data)
    chosen = select_stages(found, cfg.stages, None if cfg.stages else KINDS[cfg.kind])
    if cfg.seq_len is not None and cfg.seq_len != chosen[0].seq_len:
        raise RunError(f"--seq-len {cfg.seq_len} does not match the shards ({chosen[0].name} is packed at "
                       f"{chosen[0].seq_len}); shards have a fixed length: pass a stage spec file to build "
                       "them at another length")
    return chosen


# ------------------------------------------------------------------------------------ model
def _fresh_config(cfg: RunConfig, stages: list[StageData], tokenizer) -> ModelConfig:
    overrides: dict[str, Any] = {"vocab_size": stages[0].vocab_size}
    if tokenizer is not None:
        overrides.update(eos_token_id=list(tokenizer.stop_token_ids), pad_token_id=tokenizer.pad_token_id)
    else:
        overrides.update(eos_token_id=[stages[0].pad_id], pad_token_id=stages[0].pad_id)
    if cfg.rope_theta is not None:
        overrides["rope_theta"] = cfg.rope_theta
    model_cfg = ModelConfig.preset(cfg.preset, **overrides)
    model_cfg.max_position_embeddings = max(model_cfg.max_position_embeddings, max(s.seq_len for s in stages))
    return model_cfg


def _is_trainer_dir(path: Path) -> bool:
    return latest_checkpoint(path / "checkpoints") is not None


def build_model(cfg: RunConfig, stages: list[StageData], tokenizer, resume_from: Path | None):
    """(model in fp32, checkpoint to load into it or None) for this run."""
    from glm45.model import GLM45ForCausalLM

    torch.manual_seed(cfg.seed)
    if resume_from is not None:
        model_cfg = ModelConfig.from_hf(read_meta(resume_from)["model_config"])
        model = GLM45ForCausalLM(model_cfg)
    elif cfg.init is not None:  # an HF checkpoint
        model = GLM45ForCausalLM.from_pretrained(cfg.init, dtype=torch.float32)
    else:
        model = GLM45ForCausalLM(_fresh_config(cfg, stages, tokenizer))
        model.init_weights(cfg.seed)
    model.float()
    if model.config.vocab_size < max(s.vocab_size for s in stages):
        raise RunError(f"the model's vocabulary ({model.config.vocab_size}) is smaller than the shards' "
                       f"({max(s.vocab_size for s in stages)})")
    longest = max(s.seq_len for s in stages)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, longest)
    return model


def build_schedule(cfg: RunConfig, start_tokens: int, budget: int, seq_len: int) -> ScheduleConfig:
    total = cfg.total_tokens or start_tokens + budget
    batch = cfg.batch_tokens or 16 * seq_len
    start = min(batch, cfg.batch_start_tokens or max(seq_len, batch // 4))
    return ScheduleConfig(
        total_tokens=total, warmup_tokens=min(total, cfg.warmup_tokens or math.ceil(0.02 * total)),
        peak_lr=cfg.lr or PRESET_LR.get(cfg.preset, PAPER_LR), min_lr_ratio=cfg.min_lr_ratio,
        batch_tokens=batch, batch_start_tokens=start, batch_warmup_tokens=round(BATCH_WARMUP_FRACTION * total),
        seq_len=seq_len, bias_rate=cfg.bias_rate, bias_rate_until_tokens=round(SWITCH_FRACTION * total),
        mtp_weight=cfg.mtp_weight, mtp_weight_late=cfg.mtp_weight_late,
        mtp_switch_tokens=round(SWITCH_FRACTION * total))


# ------------------------------------------------------------------------------------ run
def _checkpoint_to_resume(cfg: RunConfig) -> Path | None:
    found = latest_checkpoint(Path(cfg.out) / "checkpoints")
    if found is not None and not cfg.resume:
        raise RunError(f"{cfg.out} already holds checkpoints (newest {found.name}); pass --resume to continue "
                       "that run, or choose a new --out")
    return found


def _tokenizer_for(cfg: RunConfig):
    candidates = [cfg.tokenizer] if cfg.tokenizer else []
    if cfg.init:
        candidates += [cfg.init, str(Path(cfg.init) / "hf")]
    for c in candidates:
        if c and (Path(c) / "tokenizer.json").is_file():
            return _load_tokenizer(c)
    if cfg.tokenizer:
        raise RunError(f"{cfg.tokenizer}: no tokenizer.json there")
    return None


def run_training(cfg: RunConfig) -> dict[str, Any]:
    """Run a pre- or mid-training command end to end; returns its summary."""
    info = init_distributed(cfg.device)
    out = Path(cfg.out)
    try:
        stages = resolve_stage_data(cfg, info)
    except (DataError, StageError) as e:
        raise RunError(str(e)) from None
    resume_from = _checkpoint_to_resume(cfg)
    init_ckpt = None
    if resume_from is None and cfg.init is not None:
        init = Path(cfg.init)
        if not init.is_dir():
            raise RunError(f"--init {init}: no such directory")
        if _is_trainer_dir(init):
            init_ckpt = latest_checkpoint(init / "checkpoints")
        elif not (init / "config.json").is_file():
            raise RunError(f"--init {init}: neither a training output directory (checkpoints/) nor a Hugging Face "
                           "checkpoint (config.json)")
    elif resume_from is None and cfg.kind == "midtrain":
        raise RunError("midtrain starts from a pre-trained model: pass --init (a pretrain --out directory or an HF "
                       "checkpoint), or --resume an interrupted midtrain run")
    tokenizer = _tokenizer_for(cfg)
    model = build_model(cfg, stages, tokenizer, resume_from or init_ckpt)
    model = parallelize(model, cfg.parallel, info)
    # Newton-Schulz runs in the training compute dtype.
    ns_dtype = dtype_name(resolve_dtype(cfg.autocast, info.device))
    # The LR is set by the schedule before every step; this value only seeds the groups.
    optimizer = build_optimizer(model, lr=cfg.lr or PRESET_LR.get(cfg.preset, PAPER_LR),
                                weight_decay=cfg.weight_decay, ns_dtype=ns_dtype)
    budget_plan = plan_stages(stages, tokens=cfg.tokens)
    budget = sum(s.tokens for s in budget_plan)
    start_tokens = read_meta(init_ckpt)["state"]["tokens"] if init_ckpt else 0
    schedule = build_schedule(cfg, start_tokens, budget, stages[0].seq_len)
    train_cfg = TrainConfig(grad_clip=cfg.grad_clip, autocast_dtype=cfg.autocast,
                            gradient_checkpointing=cfg.gradient_checkpointing, compile=cfg.compile,
                            checkpoint_every=cfg.checkpoint_every, keep_checkpoints=cfg.keep_checkpoints,
                            progress=cfg.progress, name=cfg.kind)
    trainer = Trainer(model, optimizer, schedule, None, train_cfg, out, info=info,
                      loss_fn=LMLoss(aux_weight=cfg.aux_loss_weight))
    if resume_from is not None:
        trainer.resume(resume_from)
    elif init_ckpt is not None:
        trainer.resume(init_ckpt, restore_data=False)
        if cfg.total_tokens:  # stretch (or shorten) the cosine inherited from pre-training
            trainer.schedule = dataclasses.replace(trainer.schedule, total_tokens=cfg.total_tokens)
    base_seq_len = 0 if cfg.kind == "midtrain" else None  # every mid-training stage is a long one
    plan = plan_stages(stages, tokens=cfg.tokens, long_rope_theta=cfg.long_rope_theta, base_seq_len=base_seq_len)
    if info.is_main:
        (out / "run.json").write_text(json.dumps({"config": asdict(cfg), "stages": [asdict(s) for s in plan],
                                                  "schedule": asdict(trainer.schedule),
                                                  "world_size": info.world_size}, indent=2))

    def make_loader(stage: TrainStage):
        from glm45.data.loader import PackedLoader

        return PackedLoader(stage.data, batch_size=cfg.micro_batch, seed=cfg.seed, rank=info.rank,
                            world_size=info.world_size)

    run_stages(trainer, plan, make_loader)
    extra: dict[str, Any] = {"stages": [asdict(s) for s in plan]}
    if cfg.export:
        trainer.export_pretrained(out / "hf", tokenizer=tokenizer)
        extra["export"] = str(out / "hf")
        if info.is_main and tokenizer is None:
            print(f"note: {out / 'hf'} has no tokenizer (pass --tokenizer DIR to include one)", file=sys.stderr)
    return trainer.write_summary(**extra)


# ------------------------------------------------------------------------------------ CLI
def _int(text: str) -> int:
    """Integers with optional suffixes and underscores: 2_000_000, 2M, 500K, 1.5B."""
    t = text.strip().replace("_", "").upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}.get(t[-1:], 1)
    try:
        return int(float(t[:-1]) * scale) if scale != 1 else int(t)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"not a whole number: {text!r} (e.g. 2000000, 2M, 500K)") from None


def add_run_arguments(p, kind: str) -> None:
    """The flags of `glm45 pretrain` / `glm45 midtrain` (they map onto RunConfig fields)."""
    from glm45.config import PRESETS
    from glm45.train.distributed import PARALLEL_MODES

    p.add_argument("--data", required=True,
                   help="a shard directory, a directory with one shard directory per stage (glm45 data stage), "
                        "or a stage spec file (JSON/YAML; built into OUT/data with --tokenizer)")
    p.add_argument("--out", required=True, help="output directory: checkpoints/, metrics.jsonl, summary.json, "
                                                "plots/, hf/ (the exported model)")
    p.add_argument("--stages", help="comma-separated stage names to train, in order (default: every stage with "
                                    f"{KINDS[kind]} packing)")
    if kind == "pretrain":
        p.add_argument("--preset", default="nano", choices=sorted(PRESETS), help="model size (default: nano)")
        p.add_argument("--rope-theta", type=float, help="RoPE base of the new model (default: the preset's, 10000)")
        p.add_argument("--long-rope-theta", type=float, default=1e6,
                       help="RoPE base from the first stage longer than the first one (default: 1e6)")
    else:
        p.add_argument("--init", help="the pre-trained model: a `glm45 pretrain --out` directory (continues its "
                                      "optimizer and schedule) or a Hugging Face checkpoint directory")
        p.add_argument("--rope-theta", type=float, default=1e6, dest="long_rope_theta",
                       help="RoPE base for mid-training, set when its first stage starts (default: 1e6)")
    p.add_argument("--tokenizer", help="directory with tokenizer.json (to build shards from a spec; saved with "
                                       "the exported model)")
    p.add_argument("--tokens", type=_int, help="token budget of this command, split over its stages by size "
                                               "(default: one pass over each stage's data)")
    p.add_argument("--total-tokens", type=_int, help="length of the LR schedule (pre + mid); default: tokens "
                                                     "seen at start + --tokens")
    p.add_argument("--seq-len", type=int, help="sequence length of the first stage (stage specs; later stages "
                                               "keep their ratio to it)")
    p.add_argument("--batch-tokens", type=_int, help="tokens per optimizer step after warm-up (default: 16 "
                                                     "sequences)")
    p.add_argument("--batch-start-tokens", type=_int, help="tokens per step at the start of the batch-size "
                                                           "warm-up (default: a quarter of --batch-tokens)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per forward pass per process; steps "
                                                              "accumulate gradients over micro-batches")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-3 for tiny/nano, 2.5e-4 for the "
                                            "released sizes)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final LR / peak LR of the cosine (0.1)")
    p.add_argument("--warmup-tokens", type=_int, help="LR warm-up (default: 2%% of the schedule)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--mtp-weight", type=float, default=0.3, help="MTP loss weight λ (0.1 after 15/23 of the "
                                                                 "schedule)")
    p.add_argument("--aux-loss-weight", type=float, default=1e-4, help="sequence-level balance loss weight")
    p.add_argument("--bias-rate", type=float, default=1e-3, help="loss-free balance bias update rate")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--autocast", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="compute dtype (auto: bf16 on GPUs and CPUs where it is fast)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--parallel", default="auto", choices=PARALLEL_MODES,
                   help="under torchrun: ddp or fsdp (FSDP2); auto = ddp with several processes")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--checkpoint-every", type=int, default=100, help="optimizer steps between checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (0: all)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-export", action="store_true", help="skip writing OUT/hf")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args, kind: str) -> RunConfig:
    return RunConfig(
        kind=kind, data=args.data, out=args.out, preset=getattr(args, "preset", "nano"),
        init=getattr(args, "init", None), stages=[s for s in args.stages.split(",") if s] if args.stages else None,
        tokenizer=args.tokenizer, tokens=args.tokens, total_tokens=args.total_tokens, seq_len=args.seq_len,
        batch_tokens=args.batch_tokens, batch_start_tokens=args.batch_start_tokens, micro_batch=args.micro_batch,
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_tokens=args.warmup_tokens,
        weight_decay=args.weight_decay, rope_theta=getattr(args, "rope_theta", None),
        long_rope_theta=args.long_rope_theta, mtp_weight=args.mtp_weight, bias_rate=args.bias_rate,
        aux_loss_weight=args.aux_loss_weight, grad_clip=args.grad_clip, autocast=args.autocast,
        gradient_checkpointing=args.gradient_checkpointing, compile=args.compile, parallel=args.parallel,
        device=args.device, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        resume=args.resume, seed=args.seed, progress=not args.quiet, export=not args.no_export)


def run_command(args, kind: str) -> int:
    """Shared body of the two commands: bad input becomes one clear line and exit status 2."""
    from glm45.config import ConfigError
    from glm45.tokenizer import TokenizerError
    from glm45.train.checkpoint import CheckpointError
    from glm45.train.distributed import DistributedConfigError
    from glm45.train.schedules import ScheduleConfigError
    from glm45.train.trainer import TrainerError

    import torch.distributed as dist

    try:
        summary = run_training(config_from_args(args, kind))
    except (RunError, DataError, StageError, ConfigError, TokenizerError, CheckpointError, TrainerError,
            ScheduleConfigError, DistributedConfigError) as e:
        print(f"glm45 {kind}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if summary.get("metrics") is not None:  # the main rank's summary has the metrics
        m = summary.get("metrics", {})
        print(json.dumps({"out": args.out, "steps": summary.get("steps"), "tokens": summary.get("tokens"),
                          "loss": m.get("loss"), "mtp_loss": m.get("mtp_loss"),
                          "tokens_per_s": summary.get("tokens_per_s"), "export": summary.get("export")}, indent=2))
    return 0
