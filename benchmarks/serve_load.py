"""Load test of `glm45 serve`: N concurrent streaming chat clients against one server.

Starts `glm45 serve` as a subprocess (a random checkpoint from `glm45 init` unless --model is
given), then for each N in --clients runs N clients, each sending --requests-per-client
streamed chat completions back to back (fixed length: ignore_eos + max_tokens). Reports per N:
errors (must be 0), output tokens/s, p50/p99 time to first token and end-to-end latency. Then
the same 16 requests sent one after another vs all at once, --repeats times, alternating: the
median throughput ratio is what continuous batching buys (target >= 4x; one concurrent round is
a third of a second here, so a single round swings by a third). The server runs with its
default threads (all cores but one on CPU) unless --threads is given. Prints one JSON object.

    .venv/bin/python benchmarks/serve_load.py [--model DIR] [--clients 1 4 16 64] [--max-tokens 64] [--compile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from glm45.serve.server import free_port

MODEL = "bench"


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


async def one_request(http: httpx.AsyncClient, url: str, max_tokens: int, i: int) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Tell me a story, number {i}."}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"enable_thinking": False}, "temperature": 1.0}
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    try:
        async with http.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    return {"error": event["error"]["message"]}
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                elif ttft is None and event["choices"] and any(
                        event["choices"][0]["delta"].get(k) for k in ("content", "reasoning_content", "tool_calls")):
                    ttft = time.perf_counter() - t0
            if not done:
                return {"error": "stream ended without [DONE]"}
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"ttft": ttft if ttft is not None else time.perf_counter() - t0,
            "latency": time.perf_counter() - t0, "tokens": tokens}


async def run_level(base: str, clients: int, per_client: int, max_tokens: int) -> dict:
    url = base + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        async def client(c: int) -> list[dict]:
            return [await one_request(http, url, max_tokens, c * per_client + k) for k in range(per_client)]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "clients": clients, "requests": len(results), "errors": len(errors), "error_samples": errors[:3],
        "output_tokens": tokens, "wall_s": round(wall, 3), "output_tokens_per_s": round(tokens / wall, 1),
        "ttft_s": {"p50": percentile([r["ttft"] for r in ok], 50), "p99": percentile([r["ttft"] for r in ok], 99)},
        "latency_s": {"p50": percentile([r["latency"] for r in ok], 50),
                      "p99": percentile([r["latency"] for r in ok], 99),
                      "mean": statistics.fmean([r["latency"] for r in ok]) if ok else None},
    }


def start_server(model_dir: str, port: int, max_batch: int, device: str | None, speculative: bool,
                 threads: int | None, compile: bool) -> tuple[subprocess.Popen, str]:
    """The server process and its start-up line (which names its thread count)."""
    cmd = [sys.executable, "-m", "glm45", "serve", "--model", model_dir, "--port", str(port),
           "--served-model-name", MODEL, "--max-batch-size", str(max_batch), "--log-level", "warning"]
    if device:
        cmd += ["--device", device]
    if speculative:
        cmd.append("--speculative")
    if threads:
        cmd += ["--threads", str(threads)]
    if compile:
        cmd.append("--compile")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 900  # --compile compiles before serving
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                banner = ""
                while not banner.startswith("serving"):
                    banner = proc.stdout.readline().strip()
                return proc, banner
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start in 900 s")
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (default: a random one from `glm45 init --preset`)")
    p.add_argument("--preset", default="tiny", help="preset for the random checkpoint (default tiny)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--speculative", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: the server's own)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of sequential vs concurrent")
    p.add_argument("--compile", action="store_true", help="serve with the compiled decode step")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="glm45-serve-bench-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from glm45.checkpoint.init_cli import init_checkpoint

            model_dir = os.path.join(tmp, args.preset)
            init_checkpoint(args.preset, model_dir)
        port = free_port()
        proc, banner = start_server(model_dir, port, args.max_batch_size, args.device, args.speculative, args.threads,
                                    args.compile)
        base = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(run_level(base, 2, 1, args.max_tokens))  # warm-up
            levels = [asyncio.run(run_level(base, n, args.requests_per_client, args.max_tokens)) for n in args.clients]
            rounds = [(asyncio.run(run_level(base, 1, 16, args.max_tokens)),
                       asyncio.run(run_level(base, 16, 1, args.max_tokens))) for _ in range(args.repeats)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ratios = [con["output_tokens_per_s"] / seq["output_tokens_per_s"] for seq, con in rounds]
    ratio = sorted(ratios)[(len(ratios) - 1) // 2]  # the (lower) median round, shown in full below
    sequential, concurrent = rounds[ratios.index(ratio)]
    report = {
        "benchmark": "serve_load", "model": args.model or f"random {args.preset}", "server": banner,
        "max_tokens": args.max_tokens, "max_batch_size": args.max_batch_size, "speculative": args.speculative,
        "device": args.device or "auto", "levels": levels,
        "errors_total": sum(r["errors"] for r in [*levels, *(x for pair in rounds for x in pair)]),
        "sequential_16": sequential, "concurrent_16": concurrent,
        "throughput_ratio_16_concurrent_vs_sequential": round(ratio, 2),
        "ratio_per_round": [round(r, 2) for r in ratios], "target_ratio": 4.0,
        "meets_target": ratio >= 4.0,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["errors_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
