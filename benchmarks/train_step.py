"""Training-step throughput: glm45 vs transformers' Glm4MoeForCausalLM, same config, weights, dtype.

Measures forward + backward + optimizer step (AdamW for both, so the model code is what is
compared) in fp32 and in bf16 autocast, in one process run, and prints JSON with tokens/s and
the ratio glm45 / transformers. Each side computes the next-token loss its own way, as its
trainers do: glm45 with its fused chunked head + cross-entropy (`model(ids, targets=...)`, no
[B, T, V] logits), transformers with `labels=` (logits, upcast to fp32, cross-entropy). The
`plain_loss` rows give glm45 the same logits + fp32 cross-entropy path instead.

The `full_recipe` row times glm45's whole pre-training step as `glm45.train.Trainer` runs it —
Muon + AdamW, LM + 0.3 · MTP loss + 1e-4 · sequence balance loss, gradient clipping, the
loss-free balance-bias update, the metrics record — on the same config with its MTP layer,
beside transformers + AdamW (fp32, no MTP). Both are also given as model-FLOP utilisation: the
model's training FLOPs (6 × active matmul parameters incl. output heads + causal attention)
per second over this machine's fp32 matmul peak, measured in the same run.

The `packed_rows` row times the same fp32 AdamW step on SFT-shaped rows (4 × 1024 tokens packed
from 100–600-token samples, `segment_ids` given): glm45's run-by-run attention (`SegmentRuns`)
against the same model handed the equivalent dense block-diagonal causal mask.

    python benchmarks/train_step.py [--rounds 5] [--steps 2] [--batch 8] [--seq 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from glm45.config import ModelConfig
from glm45.model import GLM45ForCausalLM, build_attention_mask, count_parameters


def bench_config() -> ModelConfig:
    # The REFERENCE peer figure: 4 layers, 256 wide, 16 experts top-4, vocab 8192.
    return ModelConfig.preset("nano", vocab_size=8192, num_nextn_predict_layers=0, torch_dtype="float32")


def _update(loss, opt) -> float:
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _step_glm45(model, opt, ids, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss_sum / ids[:, 1:].numel()
    return _update(loss, opt)


def _step_glm45_plain_loss(model, opt, ids, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(ids[:, :-1]).logits
    return _update(F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()), opt)


def _step_hf(model, opt, ids, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = model(input_ids=ids[:, :-1], labels=ids[:, 1:], shift_labels=ids[:, 1:].contiguous()).loss
    return _update(loss, opt)


def timed_interleaved(cases, ids, amp, rounds: int, steps: int, warmup: int = 3) -> list[float]:
    """Median tokens/s of each (step, model) case, timed in alternating rounds of `steps` steps.

    This machine's speed drifts by 10-30% over tens of seconds; timing the sides one after the
    other put that drift into the ratio, alternating spreads it over both."""
    opts = [torch.optim.AdamW(model.parameters(), lr=1e-4) for _, model in cases]
    for (step, model), opt in zip(cases, opts):
        for _ in range(warmup):
            step(model, opt, ids, amp)
    seconds = [[] for _ in cases]
    for _ in range(rounds):
        for (step, model), opt, out in zip(cases, opts, seconds):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(model, opt, ids, amp)
            out.append(time.perf_counter() - t0)
    return [ids[:, 1:].numel() * steps / statistics.median(t) for t in seconds]


def packed_rows(cfg: ModelConfig, batch: int = 4, seq: int = 1024, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows tiled by samples of 100–600 tokens: ids, per-sample positions and segment ids."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.zeros(batch, seq, dtype=torch.long)
    pos = torch.zeros(batch, seq, dtype=torch.long)
    for b in range(batch):
        start = sample = 0
        while start < seq:
            n = min(seq - start, int(torch.randint(100, 601, (), generator=g)))
            seg[b, start:start + n], pos[b, start:start + n] = sample, torch.arange(n)
            start, sample = start + n, sample + 1
    return {"input_ids": torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g), "position_ids": pos,
            "segment_ids": seg}


def packed_tokens_per_s(model, rows: dict[str, torch.Tensor], rounds: int, steps: int) -> tuple[float, float]:
    """tokens/s of the packed rows attended run by run (`segment_ids`) and through the dense mask."""
    ids, pos, seg = rows["input_ids"], rows["position_ids"], rows["segment_ids"]

    def step_with(mask):
        def step(m, opt, _ids, _amp):
            return _update(F.cross_entropy(m(ids[:, :-1], position_ids=pos, **mask).logits.flatten(0, 1),
                                           ids[:, 1:].flatten()), opt)
        return step

    runs, dense = ({"segment_ids": seg}, {"attn_mask": build_attention_mask(pos, None, seg)})
    return tuple(timed_interleaved([(step_with(runs), model), (step_with(dense), model)], ids, False, rounds, steps))


def fp32_matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n×n×n fp32 matmul: the peak the MFU figures divide by."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def train_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    """6 × (active parameters + output heads) + causal attention (QKᵀ and AV, forward ×3)."""
    heads = cfg.vocab_size * cfg.hidden_size * (1 + cfg.num_nextn_predict_layers)
    layers = cfg.num_hidden_layers + cfg.num_nextn_predict_layers
    attention = 6 * layers * cfg.num_attention_heads * cfg.head_dim * seq  # 2·H·hd·T/2 per product, ×2, ×3
    return 6 * (count_parameters(cfg)["active"] + heads) + attention


def full_recipe_tokens_per_s(cfg: ModelConfig, ids: torch.Tensor, steps: int) -> float:
    """glm45's whole training step (Trainer.train_step with Muon and the full objective)."""
    from glm45.train.optim import build_optimizer
    from glm45.train.schedules import ScheduleConfig
    from glm45.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = GLM45ForCausalLM(cfg)
    batch_tokens = ids[:, 1:].numel()
    sched = ScheduleConfig(total_tokens=10**9, warmup_tokens=0, peak_lr=1e-3, batch_tokens=batch_tokens,
                           batch_start_tokens=batch_tokens, batch_warmup_tokens=0, seq_len=ids.shape[1] - 1)
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, build_optimizer(model, 1e-3, ns_dtype="float32"), sched, None,
                          TrainConfig(autocast_dtype="float32", progress=False, plots=False), out)
        trainer.train_step([batch])  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step([batch])
        return batch_tokens * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2, help="steps per timed round (the other rows: 3x this)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds for the glm45 / transformers rows")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: steady on a shared 2-core machine, where 2 threads swing 30x)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    cfg = bench_config()
    ours = GLM45ForCausalLM(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    ours.train()
    hf.train()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))
    result = {"benchmark": "train_step", "config": "nano-8k (4 layers, 256 wide, 16 experts top-4, vocab 8192)",
              "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "transformers": transformers.__version__}
    for name, amp in (("fp32", False), ("bf16_autocast", True)):
        a, b, plain = timed_interleaved([(_step_glm45, ours), (_step_hf, hf), (_step_glm45_plain_loss, ours)], ids,
                                        amp, args.rounds, args.steps)
        result[name] = {"glm45_tokens_per_s": round(a), "transformers_tokens_per_s": round(b),
                        "ratio": round(a / b, 2), "glm45_plain_loss_tokens_per_s": round(plain),
                        "plain_loss_ratio": round(plain / b, 2)}
        if name == "fp32":
            hf_fp32 = b

    peak = fp32_matmul_peak_gflops()
    recipe_cfg = ModelConfig.preset("nano", vocab_size=8192, num_nextn_predict_layers=1, torch_dtype="float32")
    full = full_recipe_tokens_per_s(recipe_cfg, ids, 3 * args.steps)
    mfu = lambda tok_s, c: round(tok_s * train_flops_per_token(c, args.seq) / (peak * 1e9), 4)  # noqa: E731
    result["fp32_matmul_peak_gflops"] = round(peak, 1)
    result["fp32"]["glm45_mfu"] = mfu(result["fp32"]["glm45_tokens_per_s"], cfg)
    result["fp32"]["transformers_mfu"] = mfu(hf_fp32, cfg)
    result["full_recipe"] = {
        "recipe": "glm45 Trainer step: Muon+AdamW, LM + 0.3·MTP + 1e-4·balance loss, grad clip, bias update "
                  "(fp32, with the MTP layer) vs transformers + AdamW (fp32, LM loss, no MTP)",
        "glm45_tokens_per_s": round(full), "glm45_mfu": mfu(full, recipe_cfg),
        "transformers_adamw_tokens_per_s": round(hf_fp32), "transformers_mfu": mfu(hf_fp32, cfg),
        "ratio": round(full / hf_fp32, 2),
    }
    rows = packed_rows(cfg)
    runs, dense = packed_tokens_per_s(ours, rows, max(2, args.rounds // 2), args.steps)
    result["packed_rows"] = {"rows": "4 x 1024 tokens of 100-600-token samples, fp32, AdamW",
                             "glm45_segment_runs_tokens_per_s": round(runs),
                             "glm45_dense_mask_tokens_per_s": round(dense), "ratio": round(runs / dense, 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
