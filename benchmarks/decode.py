"""Decode speed of the glm45 engine against transformers `generate`, in one run.

1. Plain greedy decoding at batch 1 and batch 8 on the same random weights: the glm45 engine,
   eager and with its compiled decode step (`Engine(compile=True)`), vs `transformers`
   Glm4MoeForCausalLM.generate (checkpoint saved by glm45, loaded by transformers), eager and
   with a static cache and a torch.compile'd forward (its own recipe for faster decoding; it does
   not compile by itself on CPU). Repetitions alternate between all of them and the best time of
   each counts, so a noisy shared machine affects all alike. The generated tokens must be
   identical. Compile times are reported separately.
2. MTP speculative decoding on a checkpoint whose MTP head is trained: the nano model is
   trained briefly (main + MTP loss) on predictable synthetic text (a fixed successor map with
   10% noise), then the engine decodes with and without speculation, eager and compiled.
3. FP8: the trained model quantised to block-wise e4m3 (`quantize_model_fp8`): logit error
   against the source weights and agreement of greedy outputs.

Prints one JSON object with tokens/s, the ratios, the speculative acceptance rate and the FP8
error.

    python benchmarks/decode.py [--new-tokens 128] [--reps 3] [--train-steps 150] [--threads 1] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from functools import partial

import torch
import torch.nn.functional as F

from glm45.config import ModelConfig
from glm45.infer import Engine, SamplingParams, fp8_logit_error, quantize_model_fp8
from glm45.model import GLM45ForCausalLM


def nano_config() -> ModelConfig:
    return ModelConfig.preset("nano", vocab_size=8192, torch_dtype="float32")


def engine_decode(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]], dict]:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    before = dict(engine.totals)
    t0 = time.perf_counter()
    results = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    after = engine.stats()
    drafted = after["drafted"] - before["drafted"]
    run = {"acceptance_rate": (after["accepted"] - before["accepted"]) / drafted if drafted else None,
           "tokens_per_forward": (after["generated_tokens"] - before["generated_tokens"])
           / max(1, after["row_forwards"] - before["row_forwards"])}
    return dt, [r.token_ids for r in results], run


def hf_decode(model, prompts: list[list[int]], new_tokens: int, static_cache: bool = False
              ) -> tuple[float, list[list[int]]]:
    ids = torch.tensor(prompts)
    cache = {"cache_implementation": "static"} if static_cache else {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, **cache)
    dt = time.perf_counter() - t0
    return dt, out[:, ids.shape[1]:].tolist()


def load_transformers(directory: str, compiled: bool):
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    if compiled:  # its fixed-shape static cache is what lets a compiled forward serve every step
        hf.forward = torch.compile(hf.forward, dynamic=False)
    return hf


def compare_with_transformers(args) -> dict:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GLM45ForCausalLM(nano_config()).eval()
    max_len = args.prompt_len + args.new_tokens + 8
    runners = {"glm45": partial(engine_decode, Engine(model, max_batch_size=8, max_seq_len=max_len))}
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        runners["transformers"] = partial(hf_decode, load_transformers(d, compiled=False))
        if args.compile:
            runners["glm45_compiled"] = partial(engine_decode, Engine(model, max_batch_size=8, max_seq_len=max_len,
                                                                      compile=True))
            runners["transformers_compiled"] = partial(hf_decode, load_transformers(d, compiled=True),
                                                       static_cache=True)
    out: dict = {}
    g = torch.Generator().manual_seed(1)
    for batch in (1, 8):
        prompts = torch.randint(24, 8192, (batch, args.prompt_len), generator=g).tolist()
        row: dict = {"warm_up_seconds": {}}
        # Warm-up and compilation at the timed length: transformers' static cache is sized by it,
        # so a shorter warm-up would leave a recompilation inside the first timed repetition.
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(prompts, args.new_tokens)
            row["warm_up_seconds"][name] = round(time.perf_counter() - t0, 1)
        times: dict[str, list[float]] = {name: [] for name in runners}
        tokens: dict[str, list[list[int]]] = {}
        for _ in range(args.reps):
            for name, run in runners.items():
                t, tokens[name] = run(prompts, args.new_tokens)[:2]
                times[name].append(t)
        n = batch * args.new_tokens
        speed = {name: n / min(ts) for name, ts in times.items()}
        row.update({f"{name}_tokens_per_s": round(v, 1) for name, v in speed.items()})
        row["ratio"] = round(speed["glm45"] / speed["transformers"], 3)
        if args.compile:
            row["ratio_compiled_vs_transformers"] = round(speed["glm45_compiled"] / speed["transformers"], 3)
            row["ratio_compiled_vs_transformers_compiled"] = round(
                speed["glm45_compiled"] / speed["transformers_compiled"], 3)
        row["identical_tokens"] = all(ids == tokens["transformers"] for ids in tokens.values())
        out[f"batch{batch}"] = row
    return out


# ---------------------------------------------------------------- speculative decoding
def synthetic_batch(succ: torch.Tensor, alphabet: torch.Tensor, batch: int, length: int, noise: float,
                    g: torch.Generator) -> torch.Tensor:
    """Token chains x[t+1] = succ[x[t]], except a uniformly random token with prob `noise`."""
    x = torch.empty(batch, length, dtype=torch.long)
    x[:, 0] = alphabet[torch.randint(len(alphabet), (batch,), generator=g)]
    for t in range(1, length):
        rand = alphabet[torch.randint(len(alphabet), (batch,), generator=g)]
        x[:, t] = torch.where(torch.rand(batch, generator=g) < noise, rand, succ[x[:, t - 1]])
    return x


def train_predictable(args) -> tuple[GLM45ForCausalLM, torch.Tensor, torch.Tensor, dict]:
    """The nano model trained on main + MTP loss until its MTP head predicts the text."""
    torch.manual_seed(0)
    cfg = nano_config()
    model = GLM45ForCausalLM(cfg)
    g = torch.Generator().manual_seed(2)
    alphabet = torch.arange(24, 24 + args.alphabet)
    succ = torch.arange(cfg.vocab_size)
    succ[alphabet] = alphabet[torch.randperm(args.alphabet, generator=g)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.train_steps):
        x = synthetic_batch(succ, alphabet, 8, 64, 0.1, g)
        out = model(x, return_mtp=True)
        main = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        mtp = F.cross_entropy(out.mtp_logits[:, :-2].flatten(0, 1), x[:, 2:].flatten())
        loss = main + mtp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    info = {"train_steps": args.train_steps, "train_seconds": round(time.perf_counter() - t0, 1),
            "final_main_loss": round(main.item(), 3), "final_mtp_loss": round(mtp.item(), 3)}
    return model, succ, alphabet, info


def speculative_speedup(args, model, succ, alphabet, info) -> dict:
    g = torch.Generator().manual_seed(3)
    max_len = args.prompt_len + args.new_tokens + 8
    out = {"training": info}
    for compiled in ((False, True) if args.compile else (False,)):
        plain = Engine(model, max_batch_size=8, max_seq_len=max_len, compile=compiled)
        spec = Engine(model, max_batch_size=8, max_seq_len=max_len, speculative=True, compile=compiled)
        for batch in (1, 8):
            prompts = synthetic_batch(succ, alphabet, batch, args.prompt_len, 0.0, g).tolist()
            engine_decode(plain, prompts, 8)
            engine_decode(spec, prompts, 8)
            plain_t, spec_t = [], []
            for _ in range(args.reps):
                t, plain_ids, _ = engine_decode(plain, prompts, args.new_tokens)
                plain_t.append(t)
                t, spec_ids, run = engine_decode(spec, prompts, args.new_tokens)
                spec_t.append(t)
            n = batch * args.new_tokens
            out[f"batch{batch}" + ("_compiled" if compiled else "")] = {
                "plain_tokens_per_s": round(n / min(plain_t), 1),
                "speculative_tokens_per_s": round(n / min(spec_t), 1),
                "speedup": round(min(plain_t) / min(spec_t), 3), "acceptance_rate": round(run["acceptance_rate"], 3),
                "tokens_per_forward": round(run["tokens_per_forward"], 3), "identical_tokens": plain_ids == spec_ids}
    return out


def fp8_accuracy(args, model, succ, alphabet) -> dict:
    """Logit error of the FP8 copy against the trained weights, and greedy agreement."""
    g = torch.Generator().manual_seed(4)
    fp8 = quantize_model_fp8(copy.deepcopy(model))
    x = synthetic_batch(succ, alphabet, 8, 64, 0.1, g)
    err = {k: round(v, 6) for k, v in fp8_logit_error(model, fp8, x).items()}
    prompts = synthetic_batch(succ, alphabet, 8, args.prompt_len, 0.0, g).tolist()
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)
    ref = Engine(model, max_batch_size=8).generate(prompts, params)
    got = Engine(fp8, max_batch_size=8).generate(prompts, params)
    same = sum(a == b for r, q in zip(ref, got) for a, b in zip(r.token_ids, q.token_ids))
    err["greedy_token_agreement"] = round(same / (len(prompts) * args.new_tokens), 4)
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--alphabet", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both engines")
    ap.add_argument("--skip-trained", action="store_true", help="only the transformers comparison (no training)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the compiled engines (glm45 compile=True, transformers static cache + torch.compile)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"config": "nano (4 layers, hidden 256, 16 experts top-4, vocab 8192), fp32, greedy",
              "threads": args.threads, "new_tokens": args.new_tokens, "prompt_len": args.prompt_len}
    result["vs_transformers"] = compare_with_transformers(args)
    if not args.skip_trained:
        model, succ, alphabet, info = train_predictable(args)
        result["speculative"] = speculative_speedup(args, model, succ, alphabet, info)
        result["fp8"] = fp8_accuracy(args, model, succ, alphabet)
    vt = result["vs_transformers"]
    result["ratio_batch1"] = vt["batch1"]["ratio"]
    result["ratio_batch8"] = vt["batch8"]["ratio"]
    if args.compile:
        result["ratio_compiled_batch1"] = vt["batch1"]["ratio_compiled_vs_transformers"]
        result["ratio_compiled_batch8"] = vt["batch8"]["ratio_compiled_vs_transformers"]
    if "speculative" in result:
        result["speculative_speedup_batch1"] = result["speculative"]["batch1"]["speedup"]
        if args.compile:
            result["speculative_speedup_batch1_compiled"] = result["speculative"]["batch1_compiled"]["speedup"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
