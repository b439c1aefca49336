"""Base-model tasks scored by log-likelihood: held-out loss / bits-per-byte, and multiple choice.

These need a backend with the `LoglikelihoodBackend` capability (a local model; chat APIs do not
give prompt log-probabilities). The scoring math is in plain functions over per-item numbers:
- loss = total nats / total tokens; perplexity = exp(loss);
  bits-per-byte = total nats / (ln 2 · total UTF-8 bytes) — comparable across tokenizers.
- multiple choice: ``acc`` picks the choice with the highest total log-likelihood, ``acc_norm`` the
  highest log-likelihood per UTF-8 byte of the choice (removes the bias towards short choices).
"""

from __future__ import annotations

import math

from glm45.eval.backend import EvalError, LoglikelihoodRequest, supports_loglikelihood
from glm45.eval.kinds import ItemResult, RunContext, TaskKind, get_field, mean

__all__ = ["LoglikChoiceKind", "PerplexityKind", "bits_per_byte", "choice_scores", "perplexity_metrics"]


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    if total_bytes <= 0:
        raise EvalError("bits-per-byte needs at least one byte of text")
    return total_nats / (math.log(2) * total_bytes)


def perplexity_metrics(items: list[tuple[float, int, int]]) -> dict[str, float]:
    """Metrics over texts given as (log-likelihood in nats, tokens, UTF-8 bytes) each."""
    nats = -sum(ll for ll, _, _ in items)
    tokens = sum(t for _, t, _ in items)
    n_bytes = sum(b for _, _, b in items)
    if tokens <= 0:
        raise EvalError("loss needs at least one scored token")
    loss = nats / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": bits_per_byte(nats, n_bytes),
            "tokens": float(tokens), "bytes": float(n_bytes)}


def choice_scores(logliks: list[float], choices: list[str], answer: int) -> dict[str, float]:
    """acc / acc_norm of one multiple-choice item from the log-likelihood of each choice."""
    if len(logliks) != len(choices) or not logliks:
        raise EvalError("one log-likelihood per choice is needed")
    best = max(range(len(choices)), key=lambda i: logliks[i])
    per_byte = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(logliks, choices)]
    best_norm = max(range(len(choices)), key=lambda i: per_byte[i])
    return {"acc": float(best == answer), "acc_norm": float(best_norm == answer)}


def _scorer(ctx: RunContext):
    if not supports_loglikelihood(ctx.backend):
        raise EvalError("log-likelihood tasks need a backend that can score text (a local model with "
                        "--model DIR); an OpenAI-compatible endpoint cannot")
    return ctx.backend


class PerplexityKind(TaskKind):
    name = "perplexity"
    description = "held-out text: loss, perplexity and bits-per-byte (base models)"

    def validate(self, record: dict, where: str) -> None:
        if not get_field(record, "text", str, where):
            raise EvalError(f"{where}: 'text' is empty")

    def evaluate(self, task, ctx: RunContext) -> list[ItemResult]:
        backend = _scorer(ctx)
        with ctx.progress(task.name, len(task.records)) as advance:
            results = backend.loglikelihood([LoglikelihoodRequest("", r["text"]) for r in task.records])
            advance(len(task.records))
        items = []
        for rec, res in zip(task.records, results):
            n_bytes = len(rec["text"].encode("utf-8"))
            items.append(ItemResult(id=rec["id"], score=-res.logprob / max(1, res.n_tokens), samples=[],
                                    extra={"logprob": res.logprob, "tokens": res.n_tokens, "bytes": n_bytes}))
        return items

    def metrics(self, items: list[ItemResult], ctx: RunContext) -> dict[str, float]:
        return perplexity_metrics([(it.extra["logprob"], it.extra["tokens"], it.extra["bytes"]) for it in items])


class LoglikChoiceKind(TaskKind):
    name = "loglik_choice"
    description = "multiple choice scored by log-likelihood of each choice (base models)"

    def validate(self, record: dict, where: str) -> None:
        get_field(record, "context", str, where)
        choices = get_field(record, "choices", list, where)
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise EvalError(f"{where}: 'choices' must be at least 2 non-empty strings")
        answer = get_field(record, "answer", int, where)
        if not 0 <= answer < len(choices):
            raise EvalError(f"{where}: 'answer' {answer} is out of range for {len(choices)} choices")

    def evaluate(self, task, ctx: RunContext) -> list[ItemResult]:
        backend = _scorer(ctx)
        requests = [LoglikelihoodRequest(r["context"], c) for r in task.records for c in r["choices"]]
        with ctx.progress(task.name, len(task.records)) as advance:
            results = backend.loglikelihood(requests)
            advance(len(task.records))
        items, pos = [], 0
        for rec in task.records:
            n = len(rec["choices"])
            logliks = [r.logprob for r in results[pos:pos + n]]
            pos += n
            scores = choice_scores(logliks, rec["choices"], rec["answer"])
            items.append(ItemResult(id=rec["id"], score=scores["acc"], samples=[],
                                    extra={"logliks": logliks, "acc_norm": scores["acc_norm"]}))
        return items

    def metrics(self, items: list[ItemResult], ctx: RunContext) -> dict[str, float]:
        return {"acc": mean([it.score for it in items]), "acc_norm": mean([it.extra["acc_norm"] for it in items])}
