"""The reward curve of an RL run (PNG, matplotlib Agg backend): rollout reward and pass rate per
step, held-out reward where it was evaluated."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glm45.train.metrics import read_metrics  # noqa: E402

__all__ = ["plot_rewards"]


def plot_rewards(metrics_path: str | os.PathLike, out_path: str | os.PathLike, title: str = "RL reward") -> Path | None:
    """Write the reward curve of `metrics_path` to `out_path`; None when there is nothing to plot."""
    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("reward_mean") is not None]
    held = [r for r in rows if r.get("eval_reward") is not None]
    if not train and not held:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if train:
        steps = [r["step"] for r in train]
        ax.plot(steps, [r["reward_mean"] for r in train], label="rollout reward", linewidth=1.2)
        ax.plot(steps, [r["pass_rate"] for r in train], label="rollout pass rate", linewidth=0.8, alpha=0.6)
    if held:
        ax.plot([r["step"] for r in held], [r["eval_reward"] for r in held], "o-", label="held-out reward",
                linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
