"""Output head + next-token cross-entropy, forward and backward: glm45's fused chunked op against
the plain path (`logits = h @ W.T`, upcast to fp32, `F.cross_entropy`: what `transformers`'
ForCausalLMLoss does), in time and in peak memory.

Each case runs in its own child process, so its peak resident memory (ru_maxrss, less the
process's resident memory before the loss) is its own. Prints JSON.

    python benchmarks/lm_loss.py [--rows 2048] [--hidden 256] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time


def _case(kind: str, rows: int, hidden: int, vocab: int, amp: bool, repeats: int, threads: int, out) -> None:
    import torch
    import torch.nn.functional as F

    from glm45.model.linear_ce import linear_cross_entropy

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(rows, hidden, generator=g)
    weight = (0.02 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=g)

    def step() -> None:
        h = h0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            if kind == "fused":
                loss = linear_cross_entropy(h, weight, targets) / rows
            else:
                loss = F.cross_entropy(F.linear(h, weight).float(), targets)
        loss.backward()
        weight.grad = None

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up; also sets the peak
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out.put({"ms": best * 1e3, "peak_mib": peak_mib})


def run(kind: str, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(kind, *args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    results = {"benchmark": "lm_loss", "rows": args.rows, "hidden": args.hidden, "threads": args.threads}
    # nano-8k's vocabulary (the train-step benchmark) and GLM-4.5's
    for vocab in (8192, 151552):
        for name, amp in (("fp32", False), ("bf16_autocast", True)):
            plain, fused = (run(k, args.rows, args.hidden, vocab, amp, args.repeats, args.threads)
                            for k in ("plain", "fused"))
            results[f"vocab{vocab}_{name}"] = {
                "plain_ms": round(plain["ms"], 1), "fused_ms": round(fused["ms"], 1),
                "speedup": round(plain["ms"] / fused["ms"], 2),
                "plain_peak_mib": round(plain["peak_mib"]), "fused_peak_mib": round(fused["peak_mib"]),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
