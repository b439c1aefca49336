"""`glm45 generate`: prompts in (JSONL or --prompt), completions out (JSONL).

Input lines are objects with one of
  "prompt": text                      (encoded as is)
  "prompt_token_ids": [ids]
  "messages": [chat messages]         (+ optional "tools", "enable_thinking"; rendered with the
                                       generation prompt, and the output is also parsed into
                                       reasoning / content / tool calls)
plus an optional "id" and any SamplingParams field ("max_tokens", "temperature", ...) to
override the command-line sampling options for that line. One output line per input line, in
order: id, text, token_ids, finish_reason, usage, stats (and logprobs, samples, message when
they apply). A summary goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from glm45.infer.cli_options import add_engine_arguments, add_sampling_arguments, load_engine, sampling_from_args
from glm45.infer.params import SamplingParams

PARAM_FIELDS = {f.name for f in dataclasses.fields(SamplingParams)}
PROMPT_KEYS = ("prompt", "prompt_token_ids", "messages")


class InputError(ValueError):
    """A malformed input line (the message names the line)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)
    p.add_argument("--input", "-i", default=None, help="JSONL file of prompts ('-' = stdin)")
    p.add_argument("--prompt", action="append", default=[], help="a text prompt (repeatable)")
    p.add_argument("--output", "-o", default="-", help="JSONL output file (default: stdout)")
    add_sampling_arguments(p)
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--logprobs", type=int, default=None, help="return log-probabilities (and this many top ones)")


def read_requests(lines, base: SamplingParams, source: str) -> list[dict[str, Any]]:
    requests = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: each line must be a JSON object")
        keys = [k for k in PROMPT_KEYS if k in row]
        if len(keys) != 1:
            raise InputError(f"{where}: give exactly one of {', '.join(PROMPT_KEYS)}")
        unknown = set(row) - set(PROMPT_KEYS) - PARAM_FIELDS - {"id", "tools", "enable_thinking"}
        if unknown:
            raise InputError(f"{where}: unknown fields {sorted(unknown)}")
        try:
            params = dataclasses.replace(base, **{k: v for k, v in row.items() if k in PARAM_FIELDS})
        except (ValueError, TypeError) as e:
            raise InputError(f"{where}: {e}") from None
        if keys[0] == "messages":
            prompt = {"messages": row["messages"], "tools": row.get("tools"),
                      "enable_thinking": row.get("enable_thinking", True)}
        else:
            prompt = row[keys[0]]
            if keys[0] == "prompt" and not isinstance(prompt, str):
                raise InputError(f"{where}: 'prompt' must be a string (use prompt_token_ids for ids)")
        requests.append({"id": row.get("id", len(requests)), "prompt": prompt, "params": params, "where": where,
                         "chat": prompt if keys[0] == "messages" else None})
    return requests


def result_record(req: dict[str, Any], result) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": req["id"], "text": result.text, "token_ids": result.token_ids, "finish_reason": result.finish_reason,
        "usage": {"prompt_tokens": len(result.prompt_token_ids), "completion_tokens": len(result.token_ids)},
        "stats": result.stats,
    }
    if result.logprobs is not None:
        rec["logprobs"] = result.logprobs
    if req["chat"] is not None:
        from glm45.chat import parse

        rec["message"] = parse(result.text, req["chat"]["tools"], enable_thinking=req["chat"]["enable_thinking"])
    if result.samples:
        rec["samples"] = [{"text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason}
                          for s in result.samples]
    return rec


def run(args: argparse.Namespace) -> int:
    try:
        base = sampling_from_args(args, n=args.n, logprobs=args.logprobs)
        requests = [{"id": i, "prompt": p, "params": base, "where": f"--prompt {i}", "chat": None}
                    for i, p in enumerate(args.prompt)]
        if args.input is not None:
            if args.input == "-":
                requests += read_requests(sys.stdin, base, "stdin")
            else:
                with open(args.input, encoding="utf-8") as f:
                    requests += read_requests(f, base, args.input)
        if not requests:
            raise InputError("no prompts: give --input FILE.jsonl and/or --prompt TEXT")
        engine = load_engine(args)
        for req in requests:  # report a bad prompt with its line before generating anything
            try:
                req["prompt"] = engine.prompt_ids(req["prompt"])
            except ValueError as e:
                raise InputError(f"{req['where']}: {e}") from None
        t0 = time.perf_counter()
        results = engine.generate([r["prompt"] for r in requests], [r["params"] for r in requests])
        seconds = time.perf_counter() - t0
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for req, res in zip(requests, results):
            out.write(json.dumps(result_record(req, res), ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    s = engine.stats()
    summary = {"requests": len(requests), "generated_tokens": s["generated_tokens"], "seconds": round(seconds, 3),
               "tokens_per_s": round(s["generated_tokens"] / seconds, 1) if seconds > 0 else None,
               "tokens_per_forward": round(s["tokens_per_forward"], 3)}
    if s["acceptance_rate"] is not None:
        summary["acceptance_rate"] = round(s["acceptance_rate"], 3)
    print(json.dumps(summary), file=sys.stderr)
    return 0
