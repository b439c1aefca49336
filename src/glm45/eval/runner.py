"""Run tasks against a backend and write the results.

Output directory:
- ``results.json``: the run's settings and, per task, its metrics and every item with every sample
  (the model's content, reasoning and tool calls, the score and how it was decided);
- ``summary.md``: a markdown table of the metrics; ``summary.json``: the same as JSON;
- ``metrics.jsonl``: one line per finished task, appended as tasks finish.
With a cache directory, every sample is cached on disk as it arrives, so a rerun (or a run resumed
after a crash) only generates what is missing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from glm45.eval.backend import Backend, EvalError
from glm45.eval.cache import CachedBackend
from glm45.eval.kinds import RunContext, Sampling, mean
from glm45.eval.tasks import Task

__all__ = ["evaluate", "format_summary"]

_PERCENT_PREFIXES = ("avg@", "pass@", "acc")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _fmt(name: str, value: float) -> str:
    if name.startswith(_PERCENT_PREFIXES):
        return f"{100 * value:.1f}"
    if name in ("tokens", "bytes"):
        return f"{int(value)}"
    return f"{value:.4f}"


def format_summary(results: dict[str, Any]) -> str:
    """The markdown summary table of a results dict."""
    s = results["sampling"]
    lines = [
        f"# Evaluation of {results['backend']}",
        "",
        f"k = {s['k']}, thinking {'on' if s['enable_thinking'] else 'off'}, temperature {s['temperature']}, "
        f"top_p {s['top_p']}, max_tokens {s['max_tokens']}, seed {s['seed']}"
        + (f", first {results['limit']} items per task" if results.get("limit") else ""),
        "",
        "| task | kind | items | metric | score | other metrics |",
        "|---|---|---:|---|---:|---|",
    ]
    for name, t in results["tasks"].items():
        metrics = list(t["metrics"].items())
        (first, value), rest = metrics[0], metrics[1:]
        others = " · ".join(f"{k} {_fmt(k, v)}" for k, v in rest)
        lines.append(f"| {name} | {t['kind']} | {t['n_items']} | {first} | {_fmt(first, value)} | {others} |")
    lines.append("")
    lines.append("Scores in percent, except loss, perplexity and bits-per-byte.")
    return "\n".join(lines) + "\n"


def evaluate(backend: Backend, tasks: list[Task], out_dir: str | os.PathLike, *,
             sampling: Sampling | None = None, limit: int | None = None, user_backend: Backend | None = None,
             cache_dir: str | os.PathLike | None = None, score_workers: int = 4,
             show_progress: bool = True) -> dict[str, Any]:
    """Evaluate `backend` on `tasks` (the first `limit` items of each) and write the reports to
    `out_dir`; returns the results dict that results.json holds."""
    if not tasks:
        raise EvalError("no tasks to evaluate")
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be >= 1, got {limit}")
    sampling = sampling or Sampling()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caches = []
    if cache_dir is not None:
        backend = CachedBackend(backend, cache_dir)
        caches.append(backend)
        if user_backend is not None:
            user_backend = CachedBackend(user_backend, cache_dir)
            caches.append(user_backend)
    ctx = RunContext(backend=backend, sampling=sampling, user_backend=user_backend,
                     score_workers=score_workers, show_progress=show_progress)
    results: dict[str, Any] = {
        "backend": backend.name,
        "user_backend": user_backend.name if user_backend is not None else None,
        "sampling": asdict(sampling),
        "limit": limit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tasks": {},
    }
    (out / "metrics.jsonl").write_text("", encoding="utf-8")
    for task in tasks:
        if limit is not None:
            task = replace(task, records=task.records[:limit])
        start = time.monotonic()
        items = task.kind.evaluate(task, ctx)
        metrics = task.kind.metrics(items, ctx)
        tokens = [s["completion_tokens"] for it in items for s in it.samples if "completion_tokens" in s]
        entry = {
            "kind": task.kind.name,
            "source": task.source,
            "n_items": len(items),
            "metrics": metrics,
            "mean_completion_tokens": mean(tokens) if tokens else None,
            "seconds": round(time.monotonic() - start, 3),
            "items": [it.to_dict() for it in items],
        }
        results["tasks"][task.name] = entry
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"task": task.name, "kind": entry["kind"], "n_items": entry["n_items"],
                                **metrics, "seconds": entry["seconds"]}) + "\n")
        _write_atomic(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    if caches:
        results["cache"] = {"dir": str(cache_dir), "hits": sum(c.hits for c in caches),
                            "misses": sum(c.misses for c in caches)}
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_atomic(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    summary = {k: results[k] for k in ("backend", "sampling", "limit", "started", "finished")}
    summary["tasks"] = {name: {"kind": t["kind"], "n_items": t["n_items"], **t["metrics"]}
                        for name, t in results["tasks"].items()}
    if caches:
        summary["cache"] = results["cache"]
    _write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    _write_atomic(out / "summary.md", format_summary(results))
    return results
