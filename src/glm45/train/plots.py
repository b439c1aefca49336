"""PNG plots of a training run from its metrics.jsonl (matplotlib, Agg backend: no display).

Against tokens seen: loss.png (LM and MTP loss), lr.png, batch_size.png (tokens per step) and
balance.png (max load violation of each MoE layer). Stage boundaries are drawn as dotted lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glm45.train.metrics import read_metrics  # noqa: E402


def _stage_starts(rows: list[dict[str, Any]]) -> list[tuple[float, str]]:
    starts, prev = [], None
    for r in rows:
        if r.get("stage") != prev:
            prev = r.get("stage")
            starts.append((r["tokens"] - r.get("batch_tokens", 0), str(prev)))
    return starts[1:]


def _figure(rows, series: dict[str, list[float | None]], title: str, ylabel: str, path: Path,
            log_y: bool = False) -> Path:
    x = [r["tokens"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, ys in series.items():
        pts = [(a, b) for a, b in zip(x, ys) if b is not None]
        if pts:
            ax.plot(*zip(*pts), label=label, linewidth=1.2)
    for tokens, stage in _stage_starts(rows):
        ax.axvline(tokens, color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(stage, (tokens, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                    va="top", ha="right", color="grey")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_metrics(metrics_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write the plots of `metrics_path` into `out_dir`; returns their paths (none without data)."""
    rows = [r for r in read_metrics(metrics_path) if "tokens" in r]
    if not rows:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    col = lambda key: [r.get(key) for r in rows]  # noqa: E731
    paths = [
        _figure(rows, {"loss": col("loss"), "MTP loss": col("mtp_loss")}, "training loss", "cross-entropy (nats)",
                out / "loss.png"),
        _figure(rows, {"lr": col("lr")}, "learning rate", "learning rate", out / "lr.png"),
        _figure(rows, {"batch": col("batch_tokens")}, "batch size", "tokens per step", out / "batch_size.png"),
    ]
    violations = [r.get("max_violation") or [] for r in rows]
    n_layers = max(len(v) for v in violations)
    if n_layers:
        series = {f"router {i}": [v[i] if i < len(v) else None for v in violations] for i in range(n_layers)}
        paths.append(_figure(rows, series, "expert load balance (MoE layers in order, MTP last)",
                             "max load / mean load - 1",
                             out / "balance.png"))
    return paths
