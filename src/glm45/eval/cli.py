"""`glm45 eval`: evaluate a checkpoint or an OpenAI-compatible endpoint on tasks.

    glm45 eval --base-url http://127.0.0.1:8000/v1 --tasks humaneval,math:aime24.jsonl --k 4 --out runs/eval
    glm45 eval --model runs/speedrun/chat --tasks humaneval --limit 20 --out runs/eval-local

``--model DIR`` evaluates a local checkpoint through ``glm45.eval.local.make_backend`` (the inference
engine, batched; it can also score text, for base-model tasks), imported only when asked for.
Built-in synthetic tasks (``arithmetic``, ``tool_calls``, ``agent``, ``heldout_text``) run offline;
``--list-tasks`` shows them all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from glm45.eval.backend import BackendError, EvalError
from glm45.eval.kinds import Sampling

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("model (one of)")
    src.add_argument("--model", metavar="DIR", help="local checkpoint directory (needs the inference engine)")
    src.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    src.add_argument("--api-key", metavar="K", help="API key for --base-url (default: $OPENAI_API_KEY)")
    src.add_argument("--model-name", metavar="NAME", help="model name to request (default: the first in /v1/models)")
    parser.add_argument("--tasks", help="comma-separated: registered names, KIND:PATH.jsonl or PATH.jsonl")
    parser.add_argument("--list-tasks", action="store_true", help="list the registered tasks and task kinds, then exit")
    parser.add_argument("--out", metavar="DIR", help="output directory (results.json, summary.md, ...)")
    parser.add_argument("--k", type=int, default=1, help="samples per item; scores are avg@k (default 1)")
    parser.add_argument("--no-thinking", action="store_true", help="switch the model's thinking off")
    parser.add_argument("--limit", type=int, help="only the first N items of each task")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=16, help="parallel HTTP requests (default 16)")
    parser.add_argument("--max-retries", type=int, default=5, help="retries of a failed HTTP request (default 5)")
    parser.add_argument("--cache-dir", metavar="DIR", help="response cache (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache responses")
    parser.add_argument("--score-workers", type=int, default=4, help="parallel sandbox runs when scoring code")
    parser.add_argument("--user-base-url", metavar="URL", help="endpoint of the model simulating users in agent "
                        "tasks (default: the evaluated model)")
    parser.add_argument("--user-model-name", metavar="NAME")
    parser.add_argument("--user-api-key", metavar="K")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _local_backend(model_dir: str):
    from glm45.eval.local import make_backend  # imported only when asked for: it loads torch

    return make_backend(model_dir)


def _run(args: argparse.Namespace) -> int:
    from glm45.eval.openai_backend import OpenAIBackend
    from glm45.eval.runner import evaluate
    from glm45.eval.tasks import KINDS, list_tasks, resolve_task

    if args.list_tasks:
        print("tasks:")
        for name, (kind, description) in list_tasks().items():
            print(f"  {name:20s} {kind:14s} {description}")
        print("kinds (for KIND:PATH.jsonl):")
        for name, kind in KINDS.items():
            print(f"  {name:14s} {kind.description}")
        return 0
    if (args.model is None) == (args.base_url is None):
        raise EvalError("give exactly one of --model DIR or --base-url URL")
    if not args.tasks:
        raise EvalError("--tasks is required (see --list-tasks)")
    if not args.out:
        raise EvalError("--out is required")
    sampling = Sampling(k=args.k, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                        enable_thinking=not args.no_thinking, seed=args.seed)
    tasks = [resolve_task(spec) for spec in args.tasks.split(",") if spec.strip()]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise EvalError(f"two tasks share a name: {names}; rename one of the files")

    with contextlib.ExitStack() as stack:
        if args.base_url:
            backend = stack.enter_context(OpenAIBackend(
                args.base_url, args.api_key or os.environ.get("OPENAI_API_KEY"), args.model_name,
                concurrency=args.concurrency, max_retries=args.max_retries))
        else:
            backend = _local_backend(args.model)
        user_backend = None
        if args.user_base_url:
            user_backend = stack.enter_context(OpenAIBackend(
                args.user_base_url, args.user_api_key or os.environ.get("OPENAI_API_KEY"), args.user_model_name,
                concurrency=args.concurrency, max_retries=args.max_retries))
        cache_dir = None if args.no_cache else (args.cache_dir or os.path.join(args.out, "cache"))
        results = evaluate(backend, tasks, args.out, sampling=sampling, limit=args.limit,
                           user_backend=user_backend, cache_dir=cache_dir, score_workers=args.score_workers,
                           show_progress=not args.quiet)
    with open(os.path.join(args.out, "summary.md"), encoding="utf-8") as f:
        print(f.read(), end="")
    if "cache" in results:
        print(f"cache: {results['cache']['hits']} hits, {results['cache']['misses']} generated")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BackendError as e:
        print(f"error: the model backend failed: {e}", file=sys.stderr)
        return 1
