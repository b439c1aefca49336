"""Training-step throughput: glm45 vs transformers' Glm4MoeForCausalLM, same config, weights, dtype.

Measures forward + backward + optimizer step (AdamW for both, so the model code is what is
compared) in fp32 and in bf16 autocast, in one process run, and prints JSON with tokens/s and
the ratio glm45 / transformers.

    python benchmarks/train_step.py [--steps 6] [--batch 8] [--seq 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch
import torch.nn.functional as F

from glm45.config import ModelConfig
from glm45.model import GLM45ForCausalLM


def bench_config() -> ModelConfig:
    # The REFERENCE peer figure: 4 layers, 256 wide, 16 experts top-4, vocab 8192.
    return ModelConfig.preset("nano", vocab_size=8192, num_nextn_predict_layers=0, torch_dtype="float32")


def _step_glm45(model, opt, ids, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(ids[:, :-1]).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _step_hf(model, opt, ids, amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(input_ids=ids[:, :-1]).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def timed(step, model, ids, amp, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step(model, opt, ids, amp)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step(model, opt, ids, amp)
    dt = time.perf_counter() - t0
    return ids[:, 1:].numel() * steps / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()
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
        a = timed(_step_glm45, ours, ids, amp, args.steps)
        b = timed(_step_hf, hf, ids, amp, args.steps)
        result[name] = {"glm45_tokens_per_s": round(a), "transformers_tokens_per_s": round(b),
                        "ratio": round(a / b, 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
