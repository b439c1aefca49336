"""RL throughput: colocated synchronous vs disaggregated asynchronous mode, same model and tasks.

Both modes run the same GRPO steps (arithmetic prompts, K samples each, one optimizer step per
batch) from the same checkpoint in one process run. Sync alternates generate -> train -> push;
async keeps a rollout worker thread generating (with its own engine, bounded staleness) while the
trainer trains (threads share the GIL; `--ray` puts the engine in its own process). On a 2-core
CPU each side gets at most one core, so async can at best hide the shorter of rollout and
training behind the longer. Prints JSON: generated and trained samples/s per
mode, the time split, staleness, and the ratio async / sync.

    python benchmarks/rl_modes.py [--model DIR] [--steps 8] [--fp8] [--ray]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def run_mode(model_dir: str, out: Path, mode: str, args: argparse.Namespace, fp8: bool, backend: str = "local") -> dict:
    from glm45.model import GLM45ForCausalLM
    from glm45.rl.loop import RLConfig, RLRun
    from glm45.rl.overlong import OverlongConfig
    from glm45.rl.rollout import RolloutConfig
    from glm45.rl.task_sets import arithmetic_tasks
    from glm45.rl.trainer import TrainerConfig
    from glm45.tokenizer import GLMTokenizer

    cfg = RLConfig(out=str(out), mode=mode, steps=args.steps, prompts_per_step=args.prompts,
                   rollout=RolloutConfig(group_size=args.group_size, max_tokens=args.max_tokens),
                   trainer=TrainerConfig(lr=1e-5, micro_batch_size=64), dynamic_sampling=False,
                   overlong=OverlongConfig(mode="keep"), fp8_rollout=fp8, eval_every=0, max_staleness=args.staleness,
                   max_seq_len=args.max_tokens + 96, resume=False, progress=False)
    model = GLM45ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    clients = None
    if backend == "ray":  # the rollout engine in its own process: no GIL shared with the trainer
        from glm45.rl.ray_backend import ray_clients

        clients = ray_clients(1, model_dir, cfg.rollout, fp8=fp8, max_seq_len=cfg.max_seq_len, threads=args.threads)
    t0 = time.perf_counter()
    summary = RLRun(cfg, model, GLMTokenizer.from_pretrained(model_dir), arithmetic_tasks(2000, 0),
                    clients=clients).run()
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]  # first step warms up
    span = sum(r["time_step"] for r in rows)
    return {
        "mode": mode, "backend": backend, "fp8_rollout": fp8, "steps_timed": len(rows),
        "generated_samples_per_s": sum(r["samples_generated"] for r in rows) / span,
        "trained_samples_per_s": sum(r["samples_trained"] for r in rows) / span,
        "tokens_generated_per_s": sum(r["tokens_generated"] for r in rows) / span,
        "s_per_step": span / len(rows),
        "trainer_wait_s_per_step": sum(r["time_rollout"] for r in rows) / len(rows),
        "train_s_per_step": sum(r["time_train"] for r in rows) / len(rows),
        "sync_s_per_step": sum(r["time_sync"] for r in rows) / len(rows),
        "staleness_mean": sum(r["staleness_mean"] for r in rows) / len(rows),
        "wall_s": wall, "reward_last": summary["reward_last"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: a random tiny one)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--staleness", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per side")
    p.add_argument("--fp8", action="store_true", help="also time both modes with FP8 rollout")
    p.add_argument("--ray", action="store_true", help="also time async mode with the engine in a Ray actor")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from glm45.checkpoint.init_cli import init_checkpoint

            model_dir = f"{tmp}/tiny"
            init_checkpoint("tiny", model_dir)
        results = []
        for fp8 in (False, True) if args.fp8 else (False,):
            for mode in ("sync", "async"):
                results.append(run_mode(model_dir, Path(tmp) / f"{mode}-{fp8}", mode, args, fp8))
        if args.ray:
            results.append(run_mode(model_dir, Path(tmp) / "async-ray", "async", args, False, backend="ray"))
    by = {(r["mode"], r["backend"], r["fp8_rollout"]): r for r in results}
    sync = by[("sync", "local", False)]["trained_samples_per_s"]
    ratios = {f"{m}_{b}{'_fp8' if f else ''}_over_sync": r["trained_samples_per_s"] / sync
              for (m, b, f), r in by.items() if (m, b, f) != ("sync", "local", False)}
    print(json.dumps({"machine": f"{platform.machine()} {torch.get_num_threads()} torch thread(s)",
                      "model": args.model or "random tiny", "results": results,
                      "trained_samples_per_s_ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
