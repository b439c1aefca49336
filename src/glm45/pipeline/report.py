"""The speedrun's report card: `report.md` and PNG plots from the stages' summary.json and
metrics.jsonl files. A pure function of the run directory, so it can be re-made at any time.

Stage summary convention (`<run>/<stage>/summary.json`):
  {"stage": str, "status": "done" | "missing" | "failed", "wall_s": float, "tokens": int,
   "tokens_per_s": float, "peak_rss_mb": float, "metrics": {name: number}, "note": str}
Per-step records (`<run>/<stage>/metrics.jsonl`) may carry `tokens`, `loss`, `mtp_loss`,
`max_violation` (list, one per MoE layer), `reward` (or the RL loop's `reward_mean`) and
`eval_reward` (held-out).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glm45.train.metrics import read_metrics as read_metrics_file  # noqa: E402


def read_summary(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"stage": stage_dir.name, "status": "failed", "note": "summary.json is not valid JSON"}


def read_metrics(stage_dir: Path) -> list[dict[str, Any]]:
    """The stage's metrics.jsonl records (a line cut by a crash mid-write is skipped)."""
    return read_metrics_file(stage_dir / "metrics.jsonl")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def code_size(package_dir: Path) -> tuple[int, int]:
    files = list(package_dir.rglob("*.py"))
    return len(files), sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)


def _plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, list, list]]) -> bool:
    series = [s for s in series if s[1]]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, xs, ys in series:
        ax.plot(xs, ys, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def make_report(run_dir: str | os.PathLike, stages: list[str], title: str = "glm45 speedrun") -> Path:
    """Write `<run_dir>/report.md` (+ plots/) for `stages` in order; returns the report path."""
    run = Path(run_dir)
    plots = run / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    summaries = {s: read_summary(run / s) or {"stage": s, "status": "missing"} for s in stages}
    metrics = {s: read_metrics(run / s) for s in stages}

    import torch

    import glm45

    n_files, n_lines = code_size(Path(glm45.__file__).parent)
    lines = [f"# {title}", "",
             f"- machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
             f"{platform.system()} {platform.release()}",
             f"- versions: python {platform.python_version()}, torch {torch.__version__}, glm45 {glm45.__version__}",
             f"- code: {n_files} Python files, {n_lines} lines in src/glm45", ""]

    lines += ["## Stages", "", "| stage | status | wall-clock (s) | tokens | tokens/s | peak RSS (MB) | note |",
              "|---|---|---|---|---|---|---|"]
    total_wall = 0.0
    for s in stages:
        m = summaries[s]
        total_wall += float(m.get("wall_s") or 0)
        lines.append(f"| {s} | {m.get('status', 'missing')} | {_fmt(m.get('wall_s'))} | {_fmt(m.get('tokens'))} | "
                     f"{_fmt(m.get('tokens_per_s'))} | {_fmt(m.get('peak_rss_mb'))} | {m.get('note', '')} |")
    lines += ["", f"Total wall-clock: {total_wall:.0f} s", ""]

    names: list[str] = []
    for s in stages:
        for k in (summaries[s].get("metrics") or {}):
            if k not in names:
                names.append(k)
    if names:
        lines += ["## Metrics by stage", "", "| metric | " + " | ".join(stages) + " |",
                  "|---|" + "---|" * len(stages)]
        for k in names:
            row = [_fmt((summaries[s].get("metrics") or {}).get(k)) for s in stages]
            lines.append(f"| {k} | " + " | ".join(row) + " |")
        lines.append("")

    figures = []
    end, loss_series, mtp_series = 0, [], []
    for s in stages:
        rows = [r for r in metrics[s] if "loss" in r and "tokens" in r]
        if rows:
            # A stage that continues the previous one's count (mid-training) is plotted as is; one
            # that counts from zero (SFT) starts where the previous curve ended.
            offset = 0 if rows[0]["tokens"] >= end else end
            loss_series.append((s, [offset + r["tokens"] for r in rows], [r["loss"] for r in rows]))
            mtp = [r for r in rows if r.get("mtp_loss") is not None]
            mtp_series.append((s, [offset + r["tokens"] for r in mtp], [r["mtp_loss"] for r in mtp]))
            end = offset + rows[-1]["tokens"]
    if _plot(plots / "loss.png", "training loss", "tokens (cumulative)", "loss", loss_series):
        figures.append(("Loss", "plots/loss.png"))
    if _plot(plots / "mtp_loss.png", "MTP loss", "tokens (cumulative)", "loss", mtp_series):
        figures.append(("MTP loss", "plots/mtp_loss.png"))
    viol = []
    for s in stages:
        rows = [r for r in metrics[s] if isinstance(r.get("max_violation"), list) and r["max_violation"]]
        for layer in range(len(rows[0]["max_violation"]) if rows else 0):
            viol.append((f"{s} L{layer}", [r.get("step", i) for i, r in enumerate(rows)],
                         [r["max_violation"][layer] for r in rows]))
    if _plot(plots / "balance.png", "max balance violation per MoE layer", "step", "max load / mean - 1", viol):
        figures.append(("Balance violation", "plots/balance.png"))
    reward = []
    for s in stages:
        for key, label in (("reward", s), ("reward_mean", f"{s} (rollouts)"), ("eval_reward", f"{s} (held-out)")):
            rows = [r for r in metrics[s] if r.get(key) is not None]
            if rows:
                reward.append((label, [r.get("step", i) for i, r in enumerate(rows)], [r[key] for r in rows]))
    if _plot(plots / "reward.png", "RL reward", "step", "mean reward", reward):
        figures.append(("RL reward", "plots/reward.png"))
    acc = [(s, summaries[s]["metrics"]["mtp_acceptance"]) for s in stages
           if (summaries[s].get("metrics") or {}).get("mtp_acceptance") is not None]
    if acc:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        ax.bar([a for a, _ in acc], [b for _, b in acc])
        ax.set_ylim(0, 1)
        ax.set_title("MTP draft acceptance")
        fig.tight_layout()
        fig.savefig(plots / "mtp_acceptance.png", dpi=90)
        plt.close(fig)
        figures.append(("MTP acceptance", "plots/mtp_acceptance.png"))
    if figures:
        lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in figures] + [""]
    report = run / "report.md"
    report.write_text("\n".join(lines))
    return report
